"""Converts a GGUF file (or a real built-in) into a Hugging Face checkpoint directory.

  python -m experiments.convert --gguf=/models/Llama-3.2-1B-Instruct.Q8_0.gguf --out=/ckpt/llama1b
  python -m experiments.convert --gguf=builtin:smollm2-135m-instruct --out=/tmp/smollm2 --dtype=bfloat16

Writes `config.json`, `model.safetensors` (weights dequantized, stored in
`--dtype`), `tokenizer.json` and `tokenizer_config.json` (special tokens and
the chat template), which `pragjax.models.load_hf`, `Tokenizer.from_dir` and
`transformers.AutoModelForCausalLM.from_pretrained` / `AutoTokenizer` read.
"""

import os
import sys

from absl import app, flags

_GGUF = flags.DEFINE_string("gguf", None, "GGUF file, or builtin:smollm2-135m-instruct")
_OUT = flags.DEFINE_string("out", None, "output directory (created; files in it are overwritten)")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16", "float16"],
                           "storage dtype of the written tensors")


def main(argv):
  del argv
  if not _GGUF.value or not _OUT.value:
    raise app.UsageError("--gguf and --out are required")
  from pragjax.models import real_builtins
  from pragjax.models.gguf_io import gguf_to_hf

  s = gguf_to_hf(real_builtins.resolve(_GGUF.value), os.path.abspath(os.path.expanduser(_OUT.value)),
                 dtype=_DTYPE.value)
  print(f"{s['source']} -> {s['out']}: {s['model_type']}, {s['parameters'] / 1e6:.1f}M parameters in "
        f"{s['dtype']}, {s['seconds']:.1f} s")
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(main)
