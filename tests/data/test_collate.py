"""Loss masks for each record shape, truncation, padding and packing."""

import numpy as np
import pytest

from pragjax.data import DataError, pack_examples, pad_batch, tokenize_record, tokenize_records
from pragjax.models.tokenizer import build_word_level_tokenizer

WORDS = "hi there how are you fine thanks bye see ya user assistant system <|im_start|> <|im_end|> a b c d e".split()
TEMPLATE = ("{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
            "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}")


def _tok(**kwargs):
  tok = build_word_level_tokenizer(WORDS, **kwargs)
  tok.chat_template = TEMPLATE
  return tok


def _words(tok, ids):
  return [tok.backend.id_to_token(int(i)) for i in ids]


def _targets(tok, example):
  return _words(tok, example["input_ids"][example["loss_mask"] == 1])


def test_chat_loss_on_assistant_turns_only():
  tok = _tok()
  messages = [{"role": "system", "content": "see ya"}, {"role": "user", "content": "hi there"},
              {"role": "assistant", "content": "fine thanks"}, {"role": "user", "content": "how are you"},
              {"role": "assistant", "content": "bye"}]
  ex = tokenize_record({"messages": messages}, tok, max_length=64)
  assert ex["input_ids"].dtype == np.int32 and ex["loss_mask"].dtype == np.int32
  assert _words(tok, ex["input_ids"]) == tok.apply_chat_template(messages).split()
  mask = ex["loss_mask"].tolist()
  words = _words(tok, ex["input_ids"])
  # Spans: the content of each assistant turn and its end-of-turn token; never the header or user turns.
  spans = [(i, w) for i, (w, m) in enumerate(zip(words, mask)) if m]
  assert [w for _, w in spans] == ["fine", "thanks", "<|im_end|>", "bye", "<|im_end|>"]
  first = words.index("fine")
  assert words[first - 2:first] == ["<|im_start|>", "assistant"] and mask[first - 1] == 0
  assert sum(mask) == 5


def test_chat_template_not_rendering_incrementally_is_an_error():
  tok = _tok()
  tok.chat_template = "{% for m in messages %}{% if loop.last %}{{ m['content'] }} {% endif %}{% endfor %}"
  messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "fine"}]
  with pytest.raises(DataError, match="not a prefix"):
    tokenize_record({"messages": messages}, tok, max_length=16)


def test_prompt_response_boundary_and_eos():
  tok = _tok()
  ex = tokenize_record({"prompt": "hi there how", "response": "fine thanks"}, tok, max_length=32)
  assert _words(tok, ex["input_ids"]) == ["<s>", "hi", "there", "how", "fine", "thanks", "</s>"]
  assert ex["loss_mask"].tolist() == [0, 0, 0, 0, 1, 1, 1]


def test_prompt_response_when_tokenizer_appends_eos():
  tok = _tok(add_bos=True, add_eos=True)  # The post-processor's EOS must not land inside the prompt.
  ex = tokenize_record({"question": "hi", "answer": "bye"}, tok, max_length=32,
                       fields={"prompt": "question", "response": "answer"})
  assert _words(tok, ex["input_ids"]) == ["<s>", "hi", "bye", "</s>"]
  assert ex["loss_mask"].tolist() == [0, 0, 1, 1]


def test_text_every_token_after_first():
  tok = _tok()
  ex = tokenize_record({"text": "a b c"}, tok, max_length=32)
  assert _words(tok, ex["input_ids"]) == ["<s>", "a", "b", "c"]
  assert ex["loss_mask"].tolist() == [0, 1, 1, 1]


def test_truncation_removing_all_targets_returns_none_and_is_counted():
  tok = _tok()
  record = {"prompt": "a b c d e", "response": "fine"}  # 6 prompt tokens with BOS.
  assert tokenize_record(record, tok, max_length=6) is None
  kept = tokenize_record(record, tok, max_length=7)
  assert kept["loss_mask"].tolist() == [0] * 6 + [1] and len(kept["input_ids"]) == 7
  examples, dropped = tokenize_records([record, {"text": "a b"}, record], tok, max_length=6)
  assert dropped == 2 and len(examples) == 1


def test_missing_fields_named_with_record_index():
  tok = _tok()
  with pytest.raises(DataError, match=r"record 7: missing field 'response'"):
    tokenize_record({"prompt": "hi"}, tok, max_length=8, index=7)
  with pytest.raises(DataError, match=r"data\.jsonl, record 2: missing field messages\[1\]\.content"):
    tokenize_record({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant"}]}, tok, max_length=8,
                    index=2, source="data.jsonl")
  with pytest.raises(DataError, match=r"record 0: missing field: expected 'messages'"):
    tokenize_record({"body": "hi"}, tok, max_length=8, index=0)
  with pytest.raises(DataError, match="no 'assistant' message"):
    tokenize_record({"messages": [{"role": "user", "content": "hi"}]}, tok, max_length=8)


def _examples(lengths, seed=0):
  rng = np.random.default_rng(seed)
  out = []
  for n in lengths:
    mask = rng.integers(0, 2, n).astype(np.int32)
    mask[0] = 0
    out.append({"input_ids": rng.integers(4, 50, n).astype(np.int32), "loss_mask": mask})
  return out


def test_pad_right_and_left_agree_at_real_positions():
  examples = _examples([3, 7, 1, 5])
  right = pad_batch(examples, 8, pad_id=0, padding_side="right")
  left = pad_batch(examples, 8, pad_id=0, padding_side="left")
  for key in right:
    assert right[key].shape == (4, 8) and right[key].dtype == np.int32
  assert right["attention_mask"].sum(1).tolist() == [3, 7, 1, 5]
  assert right["attention_mask"][0].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
  assert left["attention_mask"][0].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
  for b, ex in enumerate(examples):
    for batch in (right, left):
      real = batch["attention_mask"][b] == 1
      np.testing.assert_array_equal(batch["input_ids"][b][real], ex["input_ids"])
      np.testing.assert_array_equal(batch["loss_mask"][b][real], ex["loss_mask"])
      assert (batch["input_ids"][b][~real] == 0).all() and (batch["loss_mask"][b][~real] == 0).all()
  with pytest.raises(DataError, match="more than seq_len=6"):
    pad_batch(examples, 6, pad_id=0)


def test_packing_first_fit_segments_and_positions():
  examples = _examples([5, 3, 4, 2, 6, 1])
  for ex in examples:
    ex["loss_mask"][:] = 1  # Packing must still zero each segment's first target.
  batch = pack_examples(examples, seq_len=8, pad_id=0)
  # First fit: row 0 = [5, 3]; row 1 = [4, 2, 1]; row 2 = [6].
  assert batch["segment_ids"].tolist() == [[1, 1, 1, 1, 1, 2, 2, 2],
                                           [1, 1, 1, 1, 2, 2, 3, 0],
                                           [1, 1, 1, 1, 1, 1, 0, 0]]
  assert batch["positions"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2],
                                         [0, 1, 2, 3, 0, 1, 0, 0],
                                         [0, 1, 2, 3, 4, 5, 0, 0]]
  np.testing.assert_array_equal(batch["attention_mask"], (batch["segment_ids"] > 0).astype(np.int32))
  starts = (batch["positions"] == 0) & (batch["segment_ids"] > 0)
  assert (batch["loss_mask"][starts] == 0).all()
  assert (batch["loss_mask"][(batch["positions"] > 0)] == 1).all()
  # Every example is whole and contiguous in exactly one row.
  where = {0: (0, 1), 1: (0, 2), 2: (1, 1), 3: (1, 2), 4: (2, 1), 5: (1, 3)}
  for i, (row, seg) in where.items():
    np.testing.assert_array_equal(batch["input_ids"][row][batch["segment_ids"][row] == seg],
                                  examples[i]["input_ids"])
  assert (batch["input_ids"][batch["segment_ids"] == 0] == 0).all()
  fixed = pack_examples(examples, seq_len=8, pad_id=0, num_rows=4)
  assert fixed["input_ids"].shape == (4, 8) and fixed["attention_mask"][3].sum() == 0
  with pytest.raises(DataError, match="more than 2"):
    pack_examples(examples, seq_len=8, pad_id=0, num_rows=2)


def test_packing_never_splits_random_examples():
  rng = np.random.default_rng(1)
  lengths = rng.integers(1, 17, 60).tolist()
  examples = _examples(lengths, seed=2)
  batch = pack_examples(examples, seq_len=16, pad_id=0)
  pieces = []
  for row in range(batch["input_ids"].shape[0]):
    for seg in range(1, batch["segment_ids"][row].max() + 1):
      sel = batch["segment_ids"][row] == seg
      idx = np.flatnonzero(sel)
      assert (np.diff(idx) == 1).all()  # Contiguous.
      np.testing.assert_array_equal(batch["positions"][row][sel], np.arange(sel.sum()))
      pieces.append(tuple(batch["input_ids"][row][sel]))
  assert sorted(pieces) == sorted(tuple(ex["input_ids"]) for ex in examples)
  assert batch["attention_mask"].mean() > 0.85  # It does pack (first fit fills rows well here).
