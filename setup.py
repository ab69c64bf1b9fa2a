"""pragjax: LLM post-training and probing methods on one JAX/Flax core."""

from setuptools import find_packages, setup

CORE = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "grain==0.2.18",
    "ml-collections==1.1.0",
    "absl-py==2.5.1",
    "chex==0.1.92",
    "jaxtyping==0.3.11",
    "numpy>=2.0,<2.5",
    "ml-dtypes==0.6.0",
    "tokenizers==0.23.3",
    "jinja2>=3.1,<4",
    "tensorboardX==2.6.5",
    "tqdm==4.70.1",
    "matplotlib==3.11.2",
    "gguf==0.19.0",  # GGUF models and tokenizers (pragjax.models.load_gguf)
]
HF = ["torch==2.13.0", "transformers==5.24.0", "safetensors==0.8.0", "accelerate==1.15.0"]  # accelerate: transformers needs it to read GGUF
TFDS = ["tensorflow-datasets==4.9.10", "array-record==0.8.6", "importlib-resources==7.1.0"]
MATH = ["math-verify==0.9.0", "latex2sympy2_extended==1.11.0", "antlr4-python3-runtime==4.13.2"]  # answer equivalence
PROBES_REF = ["cvxopt==1.3.3"]  # reference QP solver for the probes' SVM tests
BENCH = ["sawmil==0.2.1", "osqp==1.1.3", "scikit-learn==1.9.1"]  # the sAwMIL authors' package (benchmarks/sawmil_fit.py)
TRL = ["trl==1.16.0", "datasets==5.2.0"]  # the DPO parity test against trl.DPOTrainer
TEST = ["pytest==9.0.3", "pytest-xdist==3.8.0", "execnet==2.1.2", "ruff==0.17.6", "hypothesis==6.155.2", "scipy==1.17.1"] + HF + TFDS + MATH + PROBES_REF + TRL

setup(
    name="pragjax",
    version="0.1.0",
    description="LLM post-training and probing methods on one fast, sharded, tested JAX/Flax core",
    python_requires=">=3.11",
    packages=find_packages(include=["pragjax", "pragjax.*", "experiments", "experiments.*"]),
    package_data={"pragjax": ["toyworld/assets/**/*"]},
    include_package_data=True,
    install_requires=CORE,
    extras_require={
        "test": TEST,
        "hf": HF,  # transformers parity (torch CPU)
        "tfds": TFDS,  # TFDS builders for ../shared/data, no TensorFlow
        "math": MATH,  # best-of-N on math answers (pragjax.eval.math_answers)
        "bench": BENCH + PROBES_REF,  # benchmarks against reference implementations
        "gpu": ["jax[cuda12]==0.10.2"],
        "tpu": ["jax[tpu]==0.10.2"],
    },
)
