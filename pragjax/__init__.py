"""pragjax: LLM post-training and probing methods on one JAX/Flax core."""

__version__ = "0.1.0"
