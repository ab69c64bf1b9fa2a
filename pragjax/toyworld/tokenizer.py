"""Character-level tokenizers for the toy worlds.

`char_tokenizer(alphabet)` makes one token per character of `alphabet` (spaces
and newlines included) after the four special tokens `<pad>`=0, `<s>`=1,
`</s>`=2, `<unk>`=3, in the alphabet's own order, so the same alphabet always
gives the same ids. It is a `tokenizers` BPE model with no merges (every
character stays its own token), no normalizer, no pre-tokenizer and a `Fuse`
decoder (tokens are concatenated, never joined with spaces), so decoding
returns the exact text. Encoding adds BOS and not EOS; training code appends
EOS itself. A character outside the alphabet encodes to `<unk>`, which decoding
with `skip_special_tokens=True` drops.

The result is a `pragjax.models.tokenizer.Tokenizer`: `save(dir)` writes a
directory that `Tokenizer.from_dir` and `transformers.AutoTokenizer` load with
the same ids and decoded text.
"""

from __future__ import annotations

from typing import Sequence

import tokenizers
from tokenizers import decoders, models, processors

from pragjax.models.tokenizer import DEFAULT_SPECIAL_TOKENS, SPECIAL_TOKEN_KEYS, Tokenizer, TokenizerError


def char_vocab(alphabet: str, special_tokens: Sequence[str] = DEFAULT_SPECIAL_TOKENS) -> dict[str, int]:
  """Token -> id: `special_tokens` (pad, bos, eos, unk) first, then each character of `alphabet` in order."""
  if not alphabet:
    raise TokenizerError("alphabet must hold at least one character")
  repeated = sorted({c for c in alphabet if alphabet.count(c) > 1})
  if repeated:
    raise TokenizerError(f"alphabet repeats characters {repeated!r}")
  if len(special_tokens) != len(SPECIAL_TOKEN_KEYS) or len(set(special_tokens)) != len(special_tokens):
    raise TokenizerError(f"special_tokens must be 4 distinct strings (pad, bos, eos, unk), got {special_tokens!r}")
  clashes = sorted(set(special_tokens) & set(alphabet))
  if clashes:
    raise TokenizerError(f"alphabet characters {clashes!r} are also special tokens")
  return {token: i for i, token in enumerate([*special_tokens, *alphabet])}


def char_tokenizer(alphabet: str, *, special_tokens: Sequence[str] = DEFAULT_SPECIAL_TOKENS) -> Tokenizer:
  """A character-level `Tokenizer` over `alphabet`: BOS added on encode, no EOS, exact decoding."""
  vocab = char_vocab(alphabet, special_tokens)
  named = dict(zip(SPECIAL_TOKEN_KEYS, special_tokens))
  backend = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=named["unk_token"]))
  backend.decoder = decoders.Fuse()
  backend.add_special_tokens(list(special_tokens))  # Already in the vocab: marks them special.
  bos = named["bos_token"]
  backend.post_processor = processors.TemplateProcessing(
      single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, vocab[bos])])
  return Tokenizer(backend, **named)
