"""NNX decoder family, Hugging Face checkpoint I/O, sampling, tokenizers."""

from pragjax.models.config import ConfigError, ModelConfig, RopeScaling, SUPPORTED_MODEL_TYPES
from pragjax.models.decoder import Decoder, DecoderOutput, KVCache
from pragjax.models.hf_io import CheckpointError, hf_tensor_specs, load_hf, save_hf

__all__ = [
    "CheckpointError", "ConfigError", "Decoder", "DecoderOutput", "KVCache",
    "ModelConfig", "RopeScaling", "SUPPORTED_MODEL_TYPES", "hf_tensor_specs",
    "load_hf", "save_hf",
]
from pragjax.models.sampling import GenerateOutput, generate, process_logits

__all__ += ["GenerateOutput", "generate", "process_logits"]
