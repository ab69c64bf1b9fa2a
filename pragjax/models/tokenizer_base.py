"""What the tokenizer and its GGUF reader share: the error type and the BOS/EOS post-processor."""

from __future__ import annotations

import tokenizers
from tokenizers import processors


class TokenizerError(ValueError):
  """A tokenizer directory or call that cannot be honoured."""


def template_processing(backend: tokenizers.Tokenizer, bos: str | None, eos: str | None):
  """A post-processor adding `bos` before and `eos` after each sequence (either may be None)."""
  specials = [t for t in (bos, eos) if t is not None]
  for t in specials:
    if backend.token_to_id(t) is None:
      raise TokenizerError(f"special token {t!r} is not in the tokenizer vocabulary")
  single = " ".join(([f"{bos}:0"] if bos else []) + ["$A:0"] + ([f"{eos}:0"] if eos else []))
  pair = single + " " + " ".join(([f"{bos}:1"] if bos else []) + ["$B:1"] + ([f"{eos}:1"] if eos else []))
  return processors.TemplateProcessing(
      single=single, pair=pair, special_tokens=[(t, backend.token_to_id(t)) for t in specials])
