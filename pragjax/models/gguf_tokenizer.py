"""The tokenizer a GGUF file describes, rebuilt as a `tokenizers.Tokenizer`.

A GGUF file has no `tokenizer.json`: its vocabulary is metadata, under
llama.cpp's key names, and llama.cpp's tokenizer code gives those keys their
meaning. `tokenizer_parts(gf)` reads them and builds the equivalent
`tokenizers` pipeline, so that encoding follows llama.cpp on the same file.

Keys read (all under `tokenizer.`):

- `ggml.model`: the vocabulary type, "gpt2" (byte-level BPE) or "llama"
  (SentencePiece-style BPE: Llama-2, Mistral, Gemma). Any other is an error.
- `ggml.tokens`: the token strings; a token's id is its position. Required.
- `ggml.token_type`: per token 1 normal, 2 unknown, 3 control, 4 user-defined,
  5 unused, 6 byte. Absent: all normal.
- `ggml.merges` ("gpt2", required): BPE merges as "left right" strings, best
  first (the split is at the first space after the first character).
- `ggml.scores` ("llama", required): one float per token.
- `ggml.pre` ("gpt2"): the name of the pre-tokenizer, see below.
- `ggml.bos_token_id`, `ggml.eos_token_id`, `ggml.unknown_token_id`,
  `ggml.padding_token_id`: the named special tokens.
- `ggml.add_bos_token`, `ggml.add_eos_token`, `ggml.add_space_prefix`, and
  `chat_template` (a jinja2 string).

Rules that are facts of llama.cpp's format (llama-vocab.cpp):

- Byte-level BPE ("gpt2"): tokens are spelled in the GPT-2 byte alphabet. The
  text is cut by a sequence of regexes picked by `ggml.pre` (each splits every
  piece the previous one left, matches and gaps both kept as pieces), then
  mapped to the byte alphabet, then merged. The names and their regexes are in
  `PRE_TOKENIZER_NAMES` and `PRE_TOKENIZER_SPLITS`; a missing `ggml.pre` means
  "default", an unknown one is an error (no silent GPT-2 fallback). The
  llama-bpe family also sets `ignore_merges` (a piece that is itself a token
  is emitted whole) and adds BOS by default; the others add no BOS by default.
- SentencePiece-style ("llama"): every space becomes "▁", and when
  `ggml.add_space_prefix` (default true) a "▁" is prepended to each run of
  text, also after each added token (llama.cpp's `is_prev_special`); then the
  adjacent pair whose concatenation is the best-scored token merges first.
  That is a BPE whose merges are every split of every token into two tokens,
  ranked by the merged token's score (best first, then by id), with the
  `<0xXX>` byte tokens as fallback for characters not in the vocabulary.
  BOS is added by default, EOS not; the special ids default to bos 1, eos 2,
  unk 0.
- Control and unknown tokens are matched whole in the text and are special
  (skipped by `decode(skip_special_tokens=True)`); user-defined tokens are
  matched whole in the raw text and are not special.
- `ggml.add_bos_token`/`ggml.add_eos_token`, when present, override the
  defaults above.

Not carried over: llama.cpp's `clean_spaces` decoding option (decoding here
is the `tokenizers` decoder's). Where transformers' GGUF conversion differs
from llama.cpp, this module follows llama.cpp: transformers puts no digit
split in a "smollm" vocabulary, and its SentencePiece pipeline (a `Metaspace`
pre-tokenizer) adds the "▁" prefix neither after an added token nor to text
that already starts with a space.
"""

from __future__ import annotations

from typing import Sequence

import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers

from pragjax.models.tokenizer_base import TokenizerError
from pragjax.models.tokenizer_base import template_processing as _template_processing

MODEL_KEY = "tokenizer.ggml.model"
PRE_KEY = "tokenizer.ggml.pre"
TOKENS_KEY = "tokenizer.ggml.tokens"
TYPES_KEY = "tokenizer.ggml.token_type"
SCORES_KEY = "tokenizer.ggml.scores"
MERGES_KEY = "tokenizer.ggml.merges"
ADD_BOS_KEY = "tokenizer.ggml.add_bos_token"
ADD_EOS_KEY = "tokenizer.ggml.add_eos_token"
ADD_PREFIX_KEY = "tokenizer.ggml.add_space_prefix"
CHAT_TEMPLATE_KEY = "tokenizer.chat_template"
SPECIAL_ID_KEYS = {"bos_token": "tokenizer.ggml.bos_token_id", "eos_token": "tokenizer.ggml.eos_token_id",
                   "unk_token": "tokenizer.ggml.unknown_token_id", "pad_token": "tokenizer.ggml.padding_token_id"}

# Token types (llama.cpp's `llama_token_type`).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

SPIECE_SPACE = "\u2581"

_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3_SPLIT = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = _LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")

# Pre-tokenizer family -> the regexes llama.cpp applies, in order.
PRE_TOKENIZER_SPLITS = {
    "default": (r"[\p{P}\$\+<=>\^~\|]+", _GPT2_SPLIT, r"\p{N}+", r"[0-9][0-9][0-9]"),
    "gpt2": (_GPT2_SPLIT,),
    "smollm": (r"\p{N}", _GPT2_SPLIT),
    "llama-bpe": (_LLAMA3_SPLIT,),
    "qwen2": (_QWEN2_SPLIT,),
}
# `tokenizer.ggml.pre` value -> its family in PRE_TOKENIZER_SPLITS.
PRE_TOKENIZER_NAMES = {
    "default": "default",
    **dict.fromkeys(("gpt2", "gpt-2", "mpt", "olmo", "jais", "phi-2"), "gpt2"),
    **dict.fromkeys(("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"),
                    "smollm"),
    **dict.fromkeys(("llama-bpe", "llama3", "llama-v3", "falcon3", "pixtral"), "llama-bpe"),
    **dict.fromkeys(("qwen2", "stablelm2", "deepseek-r1-qwen"), "qwen2"),
}
# Families for which llama.cpp sets ignore_merges and adds BOS unless the file says otherwise.
_LLAMA3_FAMILIES = ("llama-bpe",)


def pre_tokenizer_family(name: str, path: str) -> str:
  """The family (a key of PRE_TOKENIZER_SPLITS) of `tokenizer.ggml.pre` value `name`."""
  if name not in PRE_TOKENIZER_NAMES:
    raise TokenizerError(f"{path}: metadata key {PRE_KEY!r} is {name!r}, a pre-tokenizer this reader does not "
                         f"know; supported: {', '.join(sorted(PRE_TOKENIZER_NAMES))}")
  return PRE_TOKENIZER_NAMES[name]


def split_pre_tokenizer(family: str):
  """The `tokenizers` pre-tokenizer of a byte-level family: its regex splits, then the byte alphabet."""
  splits = [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in PRE_TOKENIZER_SPLITS[family]]
  return pre_tokenizers.Sequence(splits + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def spm_merges(tokens: Sequence[str], scores: Sequence[float]) -> list[tuple[str, str]]:
  """The BPE merges a SentencePiece vocabulary implies, best first.

  Every split of a token into two pieces that are both tokens is a merge; a
  merge ranks by its merged token's score (higher first), then by that
  token's id, then by where the split falls.
  """
  ids = {t: i for i, t in enumerate(tokens)}
  ranked = []
  for i, token in enumerate(tokens):
    for k in range(1, len(token)):
      if token[:k] in ids and token[k:] in ids:
        ranked.append((-float(scores[i]), i, k))
  ranked.sort()
  return [(tokens[i][:k], tokens[i][k:]) for _, i, k in ranked]


# -- metadata access -----------------------------------------------------------


def _require(gf, key: str):
  if key not in gf.metadata:
    raise TokenizerError(f"{gf.path}: metadata key {key!r} is missing; a GGUF tokenizer needs it")
  return gf.metadata[key]


def _typed(gf, key: str, value, kind, what: str):
  if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
    raise TokenizerError(f"{gf.path}: metadata key {key!r} must be {what}, got {type(value).__name__}")
  return value


def _list(gf, key: str, item_kind, what: str, length: int | None = None) -> list:
  values = _typed(gf, key, _require(gf, key), list, f"a list of {what}")
  for i, v in enumerate(values):
    if not isinstance(v, item_kind) or isinstance(v, bool):
      raise TokenizerError(f"{gf.path}: metadata key {key!r} must be a list of {what}; item {i} is "
                           f"{type(v).__name__} ({v!r})")
  if length is not None and len(values) != length:
    raise TokenizerError(f"{gf.path}: metadata key {key!r} has {len(values)} entries but {TOKENS_KEY!r} has "
                         f"{length} tokens")
  return values


def _flag(gf, key: str, default: bool) -> bool:
  return _typed(gf, key, gf.get(key, default), bool, "a bool")


def _tokens(gf) -> list[str]:
  """The token list; llama.cpp names an empty token `[EMPTY_<id>]`; a repeated token is an error."""
  tokens = [t or f"[EMPTY_{i}]" for i, t in enumerate(_list(gf, TOKENS_KEY, str, "strings"))]
  first = {}
  for i, t in enumerate(tokens):
    if t in first:
      raise TokenizerError(f"{gf.path}: metadata key {TOKENS_KEY!r} lists token {t!r} twice (ids {first[t]} "
                           f"and {i}); ids must name distinct tokens")
    first[t] = i
  return tokens


def _token_types(gf, n: int) -> list[int]:
  if TYPES_KEY not in gf.metadata:
    return [NORMAL] * n
  return _list(gf, TYPES_KEY, int, "ints", n)


def _bpe_merges(gf) -> list[tuple[str, str]]:
  merges = []
  for i, m in enumerate(_list(gf, MERGES_KEY, str, "strings")):
    cut = m.find(" ", 1)
    if cut < 0:
      raise TokenizerError(f"{gf.path}: metadata key {MERGES_KEY!r} entry {i} ({m!r}) is not 'left right'")
    merges.append((m[:cut], m[cut + 1:]))
  return merges


def _special_ids(gf, n: int, defaults: dict[str, int]) -> dict[str, int | None]:
  ids = {}
  for name, key in SPECIAL_ID_KEYS.items():
    value = gf.get(key, defaults.get(name))
    if value is not None:
      _typed(gf, key, value, int, "an int token id")
      if not 0 <= value < n:
        raise TokenizerError(f"{gf.path}: metadata key {key!r} is {value}, outside the {n} tokens of {TOKENS_KEY!r}")
    ids[name] = value
  return ids


def _bpe_model(gf, vocab: dict[str, int], merges, **kwargs):
  try:
    return models.BPE(vocab=vocab, merges=merges, **kwargs)
  except Exception as e:  # The Rust side raises a bare Exception naming the merge.
    raise TokenizerError(f"{gf.path}: the merges do not fit the vocabulary ({e}); see {MERGES_KEY!r} and "
                         f"{TOKENS_KEY!r}") from e


# -- the two vocabulary types ----------------------------------------------------


def _byte_level_backend(gf, tokens, types, special_ids):
  """Byte-level BPE ("gpt2"): regex splits by `tokenizer.ggml.pre`, byte alphabet, ranked merges."""
  del types, special_ids
  pre = _typed(gf, PRE_KEY, gf.get(PRE_KEY, "default"), str, "a string")
  family = pre_tokenizer_family(pre, gf.path)
  vocab = {t: i for i, t in enumerate(tokens)}
  backend = tokenizers.Tokenizer(_bpe_model(gf, vocab, _bpe_merges(gf), ignore_merges=family in _LLAMA3_FAMILIES))
  backend.pre_tokenizer = split_pre_tokenizer(family)
  backend.decoder = decoders.ByteLevel()
  return backend, family in _LLAMA3_FAMILIES


def _sentencepiece_backend(gf, tokens, types, special_ids):
  """SentencePiece-style BPE ("llama"): "▁" for spaces, merges by score, byte fallback."""
  del types
  scores = _list(gf, SCORES_KEY, (int, float), "floats", len(tokens))
  unk = special_ids["unk_token"]
  vocab = {t: i for i, t in enumerate(tokens)}
  model = _bpe_model(gf, vocab, spm_merges(tokens, scores), unk_token=None if unk is None else tokens[unk],
                     fuse_unk=True, byte_fallback=True)
  backend = tokenizers.Tokenizer(model)
  space = normalizers.Replace(" ", SPIECE_SPACE)
  steps = [decoders.Replace(SPIECE_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
  if _flag(gf, ADD_PREFIX_KEY, True):
    backend.normalizer = normalizers.Sequence([normalizers.Prepend(SPIECE_SPACE), space])
    steps.append(decoders.Strip(" ", 1, 0))
  else:
    backend.normalizer = space
  backend.decoder = decoders.Sequence(steps)
  return backend, True


# `tokenizer.ggml.model` -> (backend builder, default special ids).
_VOCAB_TYPES = {
    "gpt2": (_byte_level_backend, {}),
    "llama": (_sentencepiece_backend, {"bos_token": 1, "eos_token": 2, "unk_token": 0}),
}


def _add_vocab_tokens(backend, tokens, types) -> None:
  """Control and unknown tokens as special added tokens, user-defined ones as plain added tokens."""
  special = [AddedToken(t, normalized=False, special=True) for t, k in zip(tokens, types) if k in (CONTROL, UNKNOWN)]
  plain = [AddedToken(t, normalized=False, special=False) for t, k in zip(tokens, types) if k == USER_DEFINED]
  if special:
    backend.add_special_tokens(special)
  if plain:
    backend.add_tokens(plain)


def tokenizer_parts(gf) -> dict:
  """The `Tokenizer(**parts)` arguments of `gf` (a `gguf_file.GGUFFile`), built from its `tokenizer.*`
  metadata: the `tokenizers` backend, the named special tokens, the chat template and the source."""
  model = _typed(gf, MODEL_KEY, _require(gf, MODEL_KEY), str, "a string")
  if model not in _VOCAB_TYPES:
    raise TokenizerError(f"{gf.path}: metadata key {MODEL_KEY!r} is {model!r}, a vocabulary type this reader does "
                         f"not build; supported: {', '.join(sorted(_VOCAB_TYPES))}")
  build, default_ids = _VOCAB_TYPES[model]
  tokens = _tokens(gf)
  types = _token_types(gf, len(tokens))
  special_ids = _special_ids(gf, len(tokens), {k: v for k, v in default_ids.items() if v < len(tokens)})
  backend, default_add_bos = build(gf, tokens, types, special_ids)
  _add_vocab_tokens(backend, tokens, types)
  named = {name: None if i is None else tokens[i] for name, i in special_ids.items()}
  add_bos, add_eos = _flag(gf, ADD_BOS_KEY, default_add_bos), _flag(gf, ADD_EOS_KEY, False)
  for flag, name, key in ((add_bos, "bos_token", ADD_BOS_KEY), (add_eos, "eos_token", ADD_EOS_KEY)):
    if flag and named[name] is None:
      why = "is true" if key in gf.metadata else f"defaults to true for a {model!r} vocabulary"
      raise TokenizerError(f"{gf.path}: {key!r} {why}, but {SPECIAL_ID_KEYS[name]!r} is missing")
  if add_bos or add_eos:
    backend.post_processor = _template_processing(
        backend, named["bos_token"] if add_bos else None, named["eos_token"] if add_eos else None)
  template = gf.get(CHAT_TEMPLATE_KEY)
  if template is not None:
    _typed(gf, CHAT_TEMPLATE_KEY, template, str, "a string")
  return dict(backend=backend, **named, chat_template=template, source=gf.path)
