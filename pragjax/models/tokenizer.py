"""Tokenizers from local Hugging Face tokenizer directories, with no network.

`Tokenizer.from_dir(path)` reads `tokenizer.json` (the `tokenizers` library's
serialization, which holds the model, normalizer, pre-tokenizer, decoder and
post-processor) plus, when present, `tokenizer_config.json` and
`special_tokens_map.json` for the named special tokens, padding side and chat
template. Encoding, batching, decoding and chat templating follow
`transformers.AutoTokenizer` on the same directory:

- The post-processor in `tokenizer.json` decides which special tokens
  `add_special_tokens=True` adds, as in transformers 5. Only a `tokenizer.json`
  without a post-processor takes `add_bos_token`/`add_eos_token` from
  `tokenizer_config.json` (a `TemplateProcessing` is built from them).
- `encode_batch` truncates the text before adding special tokens, as
  transformers does, so a BOS token survives left truncation.
- Chat templates render in a sandboxed jinja2 environment configured like
  transformers' (`trim_blocks`, `lstrip_blocks`, `raise_exception`,
  `strftime_now`, `tojson`).

`Tokenizer.from_gguf(path)` builds the tokenizer a GGUF file's metadata
describes (llama.cpp's vocabulary format; see `gguf_tokenizer`).

`save(path)` writes a directory that `AutoTokenizer.from_pretrained` loads.
`build_word_level_tokenizer` and `train_bpe_tokenizer` make small tokenizers
locally (toy worlds, tests).
"""

from __future__ import annotations

import datetime
import functools
import json
import os
from typing import Iterable, Sequence

import numpy as np
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from pragjax.models.tokenizer_base import TokenizerError
from pragjax.models.tokenizer_base import template_processing as _template_processing

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
SPECIAL_TOKEN_KEYS = ("pad_token", "bos_token", "eos_token", "unk_token")
DEFAULT_SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")  # Same order as SPECIAL_TOKEN_KEYS.
_SIDES = ("left", "right")




def _read_json(path: str, required: bool) -> dict:
  if not os.path.isfile(path):
    if required:
      raise TokenizerError(f"{path}: not found; expected a Hugging Face tokenizer file")
    return {}
  with open(path, encoding="utf-8") as f:
    try:
      data = json.load(f)
    except json.JSONDecodeError as e:
      raise TokenizerError(f"{path}: not valid JSON ({e})") from e
  if not isinstance(data, dict):
    raise TokenizerError(f"{path}: expected a JSON object, got {type(data).__name__}")
  return data


def _token_content(value, file: str, key: str) -> str | None:
  """A special token given as a string or an AddedToken dict -> its string."""
  if value is None or isinstance(value, str):
    return value
  if isinstance(value, dict) and isinstance(value.get("content"), str):
    return value["content"]
  raise TokenizerError(f"{file}: {key!r} must be a string or a dict with 'content', got {value!r}")


def _pick_chat_template(value, file: str) -> str | None:
  """A chat template string, or the one named 'default' in a list of them."""
  if value is None or isinstance(value, str):
    return value
  if isinstance(value, list):
    named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
    if isinstance(named.get("default"), str):
      return named["default"]
    raise TokenizerError(
        f"{file}: 'chat_template' list has no template named 'default' (names: {sorted(map(str, named))})")
  raise TokenizerError(
      f"{file}: 'chat_template' must be a string or a list of {{name, template}}, got {type(value).__name__}")


def _check_side(name: str, side: str) -> str:
  if side not in _SIDES:
    raise TokenizerError(f"{name} must be one of {_SIDES}, got {side!r}")
  return side




@functools.lru_cache(maxsize=16)
def _compile_chat_template(template: str):
  """Compiles `template` in a sandboxed jinja2 environment set up like transformers'."""
  import jinja2  # pylint: disable=g-import-not-at-top
  from jinja2 import ext, nodes, sandbox  # pylint: disable=g-import-not-at-top

  class _Generation(ext.Extension):
    """Accepts `{% generation %}...{% endgeneration %}` blocks and renders their body."""
    tags = {"generation"}

    def parse(self, parser):
      lineno = next(parser.stream).lineno
      body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
      return nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
      return caller()

  def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)

  def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

  env = sandbox.ImmutableSandboxedEnvironment(
      trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, ext.loopcontrols])
  env.filters["tojson"] = tojson
  env.globals["raise_exception"] = raise_exception
  env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)  # Llama 3.x templates.
  return env.from_string(template)


class Tokenizer:
  """A `tokenizers.Tokenizer` with named special tokens and a chat template."""

  def __init__(self, backend: tokenizers.Tokenizer, *, bos_token=None, eos_token=None, pad_token=None,
               unk_token=None, chat_template=None, padding_side="right", truncation_side="right", source=""):
    backend.no_padding()  # Padding and truncation are per call, never backend state.
    backend.no_truncation()
    self.backend = backend
    self.special_tokens = {"bos_token": bos_token, "eos_token": eos_token, "pad_token": pad_token,
                           "unk_token": unk_token}
    self.chat_template = chat_template
    self.padding_side = _check_side("padding_side", padding_side)
    self.truncation_side = _check_side("truncation_side", truncation_side)
    self.source = source

  @classmethod
  def from_dir(cls, path: str) -> "Tokenizer":
    """Loads `tokenizer.json` and the optional config files from directory `path`."""
    tok_file = os.path.join(path, TOKENIZER_FILE)
    _read_json(tok_file, required=True)  # Clear errors for missing or malformed JSON.
    try:
      backend = tokenizers.Tokenizer.from_file(tok_file)
    except Exception as e:  # The Rust side raises a bare Exception.
      raise TokenizerError(f"{tok_file}: the tokenizers library cannot load it ({e})") from e
    cfg_file = os.path.join(path, CONFIG_FILE)
    config = _read_json(cfg_file, required=False)
    map_file = os.path.join(path, SPECIAL_TOKENS_MAP_FILE)
    special_map = _read_json(map_file, required=False)
    specials = {}
    for key in SPECIAL_TOKEN_KEYS:  # tokenizer_config.json wins; special_tokens_map.json fills gaps.
      file, value = (cfg_file, config[key]) if key in config else (map_file, special_map.get(key))
      specials[key] = _token_content(value, file, key)
    template_file = os.path.join(path, CHAT_TEMPLATE_FILE)
    if os.path.isfile(template_file):  # Newer transformers save the template here; it takes priority.
      with open(template_file, encoding="utf-8") as f:
        chat_template = f.read()
    else:
      chat_template = _pick_chat_template(config.get("chat_template"), cfg_file)
    if backend.post_processor is None and (config.get("add_bos_token") or config.get("add_eos_token")):
      backend.post_processor = _template_processing(
          backend, specials["bos_token"] if config.get("add_bos_token") else None,
          specials["eos_token"] if config.get("add_eos_token") else None)
    return cls(backend, **specials, chat_template=chat_template,
               padding_side=config.get("padding_side", "right"),
               truncation_side=config.get("truncation_side", "right"), source=path)

  @classmethod
  def from_gguf(cls, path: str) -> "Tokenizer":
    """The tokenizer of GGUF file `path`, from its `tokenizer.*` metadata (see `gguf_tokenizer`)."""
    from pragjax.models import gguf_file, gguf_tokenizer  # pylint: disable=g-import-not-at-top
    if isinstance(path, gguf_file.GGUFFile):  # already parsed (e.g. by load_gguf's caller)
      gf = path
    else:
      try:
        gf = gguf_file.GGUFFile(path)
      except gguf_file.GGUFError as e:
        raise TokenizerError(str(e)) from e
    return cls(**gguf_tokenizer.tokenizer_parts(gf))

  @property
  def vocab_size(self) -> int:
    """Number of tokens, added tokens included (`len(tokenizer)` in transformers)."""
    return self.backend.get_vocab_size(with_added_tokens=True)

  def _id(self, key: str) -> int | None:
    token = self.special_tokens[key]
    return None if token is None else self.backend.token_to_id(token)

  @property
  def bos_token_id(self) -> int | None:
    return self._id("bos_token")

  @property
  def eos_token_id(self) -> int | None:
    return self._id("eos_token")

  @property
  def pad_token_id(self) -> int | None:
    """The pad token's id, else the EOS token's id, else None."""
    pad = self._id("pad_token")
    return self.eos_token_id if pad is None else pad

  def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
    """Token ids of `text`."""
    return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

  def encode_batch(self, texts: Sequence[str], *, add_special_tokens: bool = True, padding_side: str | None = None,
                   max_length: int | None = None, truncation_side: str | None = None,
                   pad_to_multiple_of: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Encodes and pads `texts` to their longest row -> (input_ids, attention_mask), both int32 [B, T].

    Sides default to the tokenizer's (from `tokenizer_config.json`, else right).
    `max_length` truncates each row's text so that, with its special tokens,
    it holds at most `max_length` ids; `pad_to_multiple_of` rounds T up.
    """
    if isinstance(texts, str):
      raise TokenizerError("encode_batch expects a sequence of strings, got one string")
    padding_side = _check_side("padding_side", padding_side or self.padding_side)
    truncation_side = _check_side("truncation_side", truncation_side or self.truncation_side)
    encodings = self.backend.encode_batch(list(texts), add_special_tokens=False)
    if max_length is not None:
      n_special = self.backend.num_special_tokens_to_add(False) if add_special_tokens else 0
      if max_length < n_special:
        raise TokenizerError(f"max_length={max_length} is less than the {n_special} special tokens added per row")
      for enc in encodings:
        enc.truncate(max_length - n_special, direction=truncation_side)
    rows = [self.backend.post_process(enc, add_special_tokens=add_special_tokens).ids for enc in encodings]
    length = max((len(r) for r in rows), default=0)
    if pad_to_multiple_of:
      length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    pad_id = self.pad_token_id
    if pad_id is None and any(len(r) < length for r in rows):
      raise TokenizerError(f"tokenizer from {self.source!r} has neither a pad nor an eos token to pad with")
    ids = np.full((len(rows), length), pad_id or 0, np.int32)
    mask = np.zeros((len(rows), length), np.int32)
    for i, row in enumerate(rows):
      span = slice(length - len(row), length) if padding_side == "left" else slice(0, len(row))
      ids[i, span] = row
      mask[i, span] = 1
    return ids, mask

  def decode(self, ids: Iterable[int], *, skip_special_tokens: bool = True) -> str:
    """The text of token `ids`."""
    return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

  def decode_batch(self, ids_2d, lengths: Sequence[int] | None = None, skip_special_tokens: bool = True) -> list[str]:
    """Decodes each row of `ids_2d`, keeping only its first `lengths[i]` ids when `lengths` is given."""
    rows = [[int(i) for i in row] for row in ids_2d]
    if lengths is not None:
      if len(lengths) != len(rows):
        raise TokenizerError(f"decode_batch got {len(rows)} rows but {len(lengths)} lengths")
      rows = [row[:int(n)] for row, n in zip(rows, lengths)]
    return self.backend.decode_batch(rows, skip_special_tokens=skip_special_tokens)

  def apply_chat_template(self, messages: Sequence[dict], *, add_generation_prompt: bool = False,
                          tokenize: bool = False, **kwargs):
    """Renders one conversation with the chat template, as transformers does.

    The template sees `messages` (keys whose value is None dropped),
    `add_generation_prompt`, `tools`/`documents` (None unless given), the
    special tokens as strings (`bos_token`, ...) and any `kwargs`. With
    `tokenize=True` returns the ids of the rendering, without added special
    tokens (the template writes its own).
    """
    if self.chat_template is None:
      raise TokenizerError(f"tokenizer from {self.source!r} has no chat_template (expected in {CONFIG_FILE} "
                           f"or {CHAT_TEMPLATE_FILE})")
    messages = [{k: v for k, v in m.items() if v is not None} for m in messages]
    variables = {"tools": None, "documents": None,
                 **{k: v for k, v in self.special_tokens.items() if v is not None}, **kwargs}
    text = _compile_chat_template(self.chat_template).render(
        messages=messages, add_generation_prompt=add_generation_prompt, **variables)
    return self.encode(text, add_special_tokens=False) if tokenize else text

  def save(self, path: str) -> None:
    """Writes `tokenizer.json` and `tokenizer_config.json` into directory `path`."""
    os.makedirs(path, exist_ok=True)
    self.backend.save(os.path.join(path, TOKENIZER_FILE))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
              "padding_side": self.padding_side, "truncation_side": self.truncation_side,
              **{k: v for k, v in self.special_tokens.items() if v is not None}}
    if self.chat_template is not None:
      config["chat_template"] = self.chat_template
    with open(os.path.join(path, CONFIG_FILE), "w", encoding="utf-8") as f:
      json.dump(config, f, indent=2, ensure_ascii=False)


def check_vocab(tokenizer: Tokenizer, model_vocab_size: int, *, source: str = "") -> None:
  """Raises TokenizerError if some tokenizer id has no row in a model with `model_vocab_size` embeddings.

  A model vocabulary larger than the tokenizer's (padded for sharding) is fine.
  """
  ids = tokenizer.backend.get_vocab(with_added_tokens=True).values()
  needed = max(max(ids, default=-1) + 1, tokenizer.vocab_size)
  if needed > model_vocab_size:
    raise TokenizerError(
        f"tokenizer from {source or tokenizer.source or '<in memory>'!r} has vocab_size {needed} but the model's "
        f"vocab_size is {model_vocab_size}; ids >= {model_vocab_size} would index past the embedding table")


def _named_specials(special_tokens: Sequence[str]) -> dict[str, str]:
  if len(special_tokens) != len(SPECIAL_TOKEN_KEYS) or len(set(special_tokens)) != len(special_tokens):
    raise TokenizerError(f"special_tokens must be 4 distinct strings (pad, bos, eos, unk), got {special_tokens!r}")
  return dict(zip(SPECIAL_TOKEN_KEYS, special_tokens))


def _finish(backend, special_tokens, add_bos, add_eos) -> Tokenizer:
  named = _named_specials(special_tokens)
  backend.add_special_tokens(list(special_tokens))  # Already in the vocab: marks them special.
  if add_bos or add_eos:
    backend.post_processor = _template_processing(
        backend, named["bos_token"] if add_bos else None, named["eos_token"] if add_eos else None)
  return Tokenizer(backend, **named)


def build_word_level_tokenizer(vocab: Sequence[str], *, special_tokens: Sequence[str] = DEFAULT_SPECIAL_TOKENS,
                               add_bos: bool = True, add_eos: bool = False) -> Tokenizer:
  """A whitespace-split word tokenizer: ids are `special_tokens` (pad, bos, eos, unk) then `vocab` in order."""
  named = _named_specials(special_tokens)
  words = list(special_tokens) + list(vocab)
  if len(set(words)) != len(words):
    dupes = sorted({w for w in words if words.count(w) > 1})
    raise TokenizerError(f"vocab repeats words (or special tokens): {dupes}")
  backend = tokenizers.Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=named["unk_token"]))
  backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  return _finish(backend, special_tokens, add_bos, add_eos)


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, *,
                        special_tokens: Sequence[str] = DEFAULT_SPECIAL_TOKENS, add_bos: bool = True,
                        add_eos: bool = False) -> Tokenizer:
  """A byte-level BPE tokenizer (GPT-2 style) trained on `texts`; ids 0..3 are `special_tokens`."""
  _named_specials(special_tokens)
  alphabet = pre_tokenizers.ByteLevel.alphabet()
  if vocab_size < len(alphabet) + len(special_tokens):
    raise TokenizerError(f"vocab_size={vocab_size} is below the {len(alphabet)} bytes plus "
                         f"{len(special_tokens)} special tokens a byte-level BPE needs")
  backend = tokenizers.Tokenizer(models.BPE())
  backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  backend.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens),
                                initial_alphabet=alphabet, show_progress=False)
  backend.train_from_iterator(texts, trainer)
  return _finish(backend, special_tokens, add_bos, add_eos)
