"""Tests for pragjax.models.tokenizer, against transformers.AutoTokenizer where it is installed."""

import json
import os
import random

import numpy as np
import pytest

from pragjax.models import tokenizer as tok_lib
from pragjax.models.tokenizer import Tokenizer, TokenizerError

# Indented block tags, `tojson` on text with HTML characters and non-ASCII, the
# special-token variables and raise_exception: every transformers setting shows.
CHAT_TEMPLATE = """{{ bos_token }}
{% for m in messages %}
    {% if m['role'] not in ['system', 'user', 'assistant'] %}
        {{ raise_exception('unknown role ' + m['role']) }}
    {% endif %}
<|{{ m['role'] }}|>
{% if m['role'] == 'system' %}
    {{ m['content'] | tojson }}
{% else %}
    {{ m['content'] | trim }}{{ eos_token }}
{% endif %}

{% endfor %}
{% if add_generation_prompt %}
<|assistant|>
{% endif %}"""

MESSAGES = [
    {"role": "system", "content": "Be <brief> & kind, naïve café ☕"},
    {"role": "user", "content": "  What is 2 + 2?  "},
    {"role": "assistant", "content": "It is 4.", "tool_calls": None},
    {"role": "user", "content": "Und auf Deutsch? 日本語も"},
]

TEXTS = ["the cat sat on the mat", "Héllo wörld, naïve café! 日本語 🙂", "", "a",
         "  leading and trailing spaces  ", "numbers 12345 and\nnewlines\ttabs"]


def _sentences(n=400, seed=0):
  rng = random.Random(seed)
  words = ("the cat dog sat ran on under mat hat tree big small red blue café naïve wörld "
           "日本 語 🙂 and or but 1 2 3 42 , . !").split()
  return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(n)]


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory):
  tok = tok_lib.train_bpe_tokenizer(_sentences(), vocab_size=320)
  tok.chat_template = CHAT_TEMPLATE
  path = str(tmp_path_factory.mktemp("bpe_tok"))
  tok.save(path)
  return path


@pytest.fixture(scope="module")
def ours(saved_dir):
  return Tokenizer.from_dir(saved_dir)


@pytest.fixture(scope="module")
def hf(saved_dir):
  transformers = pytest.importorskip("transformers")
  return transformers.AutoTokenizer.from_pretrained(saved_dir)


def test_trained_tokenizer_layout(ours):
  assert ours.vocab_size == 320  # 256 bytes + 4 specials + 60 merges.
  assert (ours.pad_token_id, ours.bos_token_id, ours.eos_token_id) == (0, 1, 2)
  ids = ours.encode("the cat")
  assert ids[0] == ours.bos_token_id and ours.bos_token_id not in ours.encode("the cat", add_special_tokens=False)
  assert ours.chat_template == CHAT_TEMPLATE


def test_encode_matches_transformers(ours, hf):
  assert len(hf) == ours.vocab_size
  assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (
      ours.bos_token_id, ours.eos_token_id, ours.pad_token_id)
  for text in TEXTS:
    for add in (True, False):
      assert ours.encode(text, add_special_tokens=add) == hf.encode(text, add_special_tokens=add), (text, add)


@pytest.mark.parametrize("side", ["left", "right"])
def test_encode_batch_matches_transformers(ours, hf, side):
  hf.padding_side = side
  want = hf(TEXTS, padding=True)
  ids, mask = ours.encode_batch(TEXTS, padding_side=side)
  assert ids.dtype == np.int32 and mask.dtype == np.int32
  np.testing.assert_array_equal(ids, np.array(want["input_ids"]))
  np.testing.assert_array_equal(mask, np.array(want["attention_mask"]))
  pad_col = 0 if side == "left" else -1
  assert ids[TEXTS.index(""), pad_col] == ours.pad_token_id  # The empty text is the shortest row.


@pytest.mark.parametrize("side", ["left", "right"])
def test_truncation_matches_transformers(ours, hf, side):
  hf.padding_side = "right"
  hf.truncation_side = side
  want = hf(TEXTS, padding=True, truncation=True, max_length=5)
  ids, mask = ours.encode_batch(TEXTS, padding_side="right", max_length=5, truncation_side=side)
  assert ids.shape == (len(TEXTS), 5)
  np.testing.assert_array_equal(ids, np.array(want["input_ids"]))
  np.testing.assert_array_equal(mask, np.array(want["attention_mask"]))


@pytest.mark.parametrize("side", ["left", "right"])
def test_truncation_keeps_the_right_end_and_bos(ours, side):
  text = "the cat sat on the mat under the big red tree"
  full = ours.encode(text, add_special_tokens=False)
  ids, mask = ours.encode_batch([text], max_length=4, truncation_side=side)
  kept = full[-3:] if side == "left" else full[:3]
  assert ids[0].tolist() == [ours.bos_token_id] + kept
  assert mask.tolist() == [[1, 1, 1, 1]]


def test_pad_to_multiple_of(ours):
  ids, mask = ours.encode_batch(["the cat", "a"], padding_side="right", pad_to_multiple_of=8)
  assert ids.shape[1] == 8
  assert mask.sum(axis=1).tolist() == [len(ours.encode("the cat")), len(ours.encode("a"))]


def test_decode_round_trips(ours, hf):
  for text in TEXTS:
    ids = ours.encode(text)
    assert ours.decode(ids) == text
    assert ours.decode(np.array(ids)) == hf.decode(ids, skip_special_tokens=True)
    assert ours.decode(ids, skip_special_tokens=False).startswith("<s>")


def test_decode_batch_with_lengths(ours):
  ids, mask = ours.encode_batch(["the cat sat", "the dog"], padding_side="right", add_special_tokens=False)
  assert ours.decode_batch(ids, lengths=mask.sum(axis=1)) == ["the cat sat", "the dog"]
  assert ours.decode_batch(ids, lengths=[1, 1]) == [ours.decode(ids[0, :1]), ours.decode(ids[1, :1])]
  with pytest.raises(TokenizerError, match="2 rows but 1 lengths"):
    ours.decode_batch(ids, lengths=[1])


@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_chat_template_matches_transformers(ours, hf, add_generation_prompt):
  want = hf.apply_chat_template(MESSAGES, add_generation_prompt=add_generation_prompt, tokenize=False)
  got = ours.apply_chat_template(MESSAGES, add_generation_prompt=add_generation_prompt)
  assert got == want
  assert got.endswith("<|assistant|>\n") == add_generation_prompt
  assert '"Be <brief> & kind, naïve café ☕"' in got  # tojson keeps HTML characters and unicode.
  ids = ours.apply_chat_template(MESSAGES, add_generation_prompt=add_generation_prompt, tokenize=True)
  assert ids == hf.apply_chat_template(
      MESSAGES, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=False)


def test_chat_template_errors(ours):
  with pytest.raises(Exception, match="unknown role tool"):
    ours.apply_chat_template([{"role": "tool", "content": "x"}])
  dated = Tokenizer(ours.backend, chat_template="{{ strftime_now('%Y') }}")
  assert dated.apply_chat_template(MESSAGES).isdigit()
  bare = tok_lib.build_word_level_tokenizer(["a"])
  with pytest.raises(TokenizerError, match="no chat_template"):
    bare.apply_chat_template(MESSAGES)


def test_check_vocab(ours):
  tok_lib.check_vocab(ours, 320)
  tok_lib.check_vocab(ours, 384)  # A padded model vocabulary is fine.
  with pytest.raises(TokenizerError) as e:
    tok_lib.check_vocab(ours, 319, source="/ckpt/tiny")
  assert "320" in str(e.value) and "319" in str(e.value) and "/ckpt/tiny" in str(e.value)


def test_missing_and_invalid_tokenizer_json(tmp_path):
  with pytest.raises(TokenizerError, match="tokenizer.json: not found"):
    Tokenizer.from_dir(str(tmp_path))
  (tmp_path / "tokenizer.json").write_text("{not json")
  with pytest.raises(TokenizerError, match=f"{tmp_path}/tokenizer.json: not valid JSON"):
    Tokenizer.from_dir(str(tmp_path))


def test_bad_sides(ours):
  with pytest.raises(TokenizerError, match="padding_side must be one of"):
    ours.encode_batch(["a"], padding_side="middle")
  with pytest.raises(TokenizerError, match="truncation_side must be one of"):
    ours.encode_batch(["a"], max_length=2, truncation_side="up")


def _write_word_level_dir(path, config, special_map=None):
  backend = tok_lib.build_word_level_tokenizer(["hello", "world"], add_bos=False).backend
  backend.post_processor = None
  backend.save(os.path.join(path, "tokenizer.json"))
  (path / "tokenizer_config.json").write_text(json.dumps(config))
  if special_map is not None:
    (path / "special_tokens_map.json").write_text(json.dumps(special_map))


def test_from_dir_reads_config_forms(tmp_path):
  _write_word_level_dir(tmp_path, {
      "bos_token": {"content": "<s>", "special": True}, "eos_token": "</s>",
      "add_bos_token": True, "add_eos_token": True, "padding_side": "left",
      "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}],
  }, special_map={"unk_token": {"content": "<unk>"}, "eos_token": "<pad>"})
  tok = Tokenizer.from_dir(str(tmp_path))
  assert tok.special_tokens == {"bos_token": "<s>", "eos_token": "</s>", "pad_token": None, "unk_token": "<unk>"}
  assert tok.pad_token_id == tok.eos_token_id == 2  # No pad token: pads with eos.
  assert tok.encode("hello world") == [1, 4, 5, 2]  # add_bos/eos_token apply: no post-processor in the file.
  assert tok.chat_template == "D"
  ids, _ = tok.encode_batch(["hello", "hello world"])
  assert ids[0].tolist() == [2, 1, 4, 2]  # padding_side from the config.


def test_from_dir_bad_config_values(tmp_path):
  _write_word_level_dir(tmp_path, {"chat_template": [{"name": "x", "template": "T"}]})
  with pytest.raises(TokenizerError, match="tokenizer_config.json: 'chat_template' list has no template named"):
    Tokenizer.from_dir(str(tmp_path))
  _write_word_level_dir(tmp_path, {"bos_token": 3})
  with pytest.raises(TokenizerError, match="tokenizer_config.json: 'bos_token' must be a string"):
    Tokenizer.from_dir(str(tmp_path))


def test_word_level_tokenizer():
  tok = tok_lib.build_word_level_tokenizer(["red", "blue", "cube"])
  assert tok.vocab_size == 7
  assert tok.encode("red  cube green") == [1, 4, 6, 3]  # bos, words, unk.
  assert tok.decode(tok.encode("blue cube")) == "blue cube"
  with pytest.raises(TokenizerError, match="repeats"):
    tok_lib.build_word_level_tokenizer(["red", "red"])
  with pytest.raises(TokenizerError, match="vocab_size=100"):
    tok_lib.train_bpe_tokenizer(["x"], 100)
