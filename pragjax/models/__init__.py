"""NNX decoder family, Hugging Face checkpoint I/O, sampling, tokenizers."""

from pragjax.models import real_builtins  # noqa: F401  (public: pragjax.models.real_builtins.SMOLLM2)
from pragjax.models.config import SUPPORTED_MODEL_TYPES, ConfigError, ModelConfig, RopeScaling
from pragjax.models.decoder import Decoder, DecoderOutput, KVCache
from pragjax.models.gguf_file import GGUFError, GGUFFile
from pragjax.models.gguf_io import gguf_model_config, load_gguf
from pragjax.models.hf_io import CheckpointError, hf_tensor_specs, load_hf, save_hf

__all__ = [
    "CheckpointError", "ConfigError", "Decoder", "DecoderOutput", "GGUFError", "GGUFFile", "KVCache",
    "ModelConfig", "RopeScaling", "SUPPORTED_MODEL_TYPES", "hf_tensor_specs",
    "gguf_model_config", "load_gguf", "load_hf", "save_hf",
]
from pragjax.models.logprobs import batch_token_logprobs, model_token_logprobs
from pragjax.models.sampling import GenerateOutput, generate, process_logits

__all__ += ["GenerateOutput", "batch_token_logprobs", "generate", "model_token_logprobs", "process_logits"]
