"""Train iterator: determinism, seeds, exact resume from saved state, process slices, global arrays."""

import functools
import json

import grain
import jax
import numpy as np
import pytest

from pragjax.data import DataError, make_train_iterator, to_global_arrays, tokenize_record
from pragjax.models.tokenizer import build_word_level_tokenizer
from pragjax.sharding import make_mesh

WORDS = [f"w{i}" for i in range(64)]
TOK = build_word_level_tokenizer(WORDS)
SEQ = 16
READ = grain.ReadOptions(num_threads=2, prefetch_buffer_size=16)


def _records(n, long_every=0):
  """Text records of 2..9 words; every `long_every`-th one is a prompt too long to keep any target."""
  out = []
  for i in range(n):
    if long_every and i % long_every == long_every - 1:
      out.append({"prompt": " ".join(WORDS[:SEQ + 2]), "response": "w1"})
    else:
      out.append({"text": " ".join(WORDS[(i * 5) % 50:(i * 5) % 50 + 2 + i % 8])})
  return out


TOKENIZE = functools.partial(tokenize_record, tokenizer=TOK, max_length=SEQ)


def _iterator(records, **kwargs):
  args = dict(global_batch_size=4, seq_len=SEQ, seed=0, pad_id=TOK.pad_token_id, process_index=0,
              process_count=1, read_options=READ)
  args.update(kwargs)
  return make_train_iterator(records, TOKENIZE, **args)


def _take(it, k):
  return [next(it) for _ in range(k)]


def _assert_same(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_batch_contract_and_seeds():
  records = _records(40)
  first = _take(_iterator(records), 5)
  for key in ("input_ids", "attention_mask", "loss_mask"):
    assert first[0][key].shape == (4, SEQ) and first[0][key].dtype == np.int32
  _assert_same(first, _take(_iterator(records), 5))
  other = _take(_iterator(records, seed=1), 5)
  assert any(not np.array_equal(a["input_ids"], b["input_ids"]) for a, b in zip(first, other))
  # Same multiset of records in an epoch, whatever the seed: 40 records = 10 batches.
  rows = lambda bs: sorted(tuple(r) for b in bs for r in b["input_ids"])
  assert rows(_take(_iterator(records, seed=0), 10)) == rows(_take(_iterator(records, seed=1), 10))
  unshuffled = _take(_iterator(records, shuffle=False), 1)[0]
  expected = [TOK.encode(r["text"]) for r in records[:4]]
  assert [row[row != 0].tolist() for row in unshuffled["input_ids"]] == expected


@pytest.mark.parametrize("packing", [False, True])
def test_resume_from_state_matches_uninterrupted(packing):
  records = _records(26, long_every=5)  # Drops, and epochs of 26 records cross batch boundaries.
  reference = _take(_iterator(records, packing=packing), 3 + 5)
  interrupted = _iterator(records, packing=packing)
  _take(interrupted, 3)
  state = json.loads(json.dumps(interrupted.get_state()))
  dropped = interrupted.num_dropped
  assert dropped > 0
  resumed = _iterator(records, packing=packing)
  resumed.set_state(state)
  assert resumed.num_dropped == dropped
  _assert_same(reference[3:], _take(resumed, 5))
  # The interrupted iterator itself also continues identically.
  _assert_same(reference[3:], _take(interrupted, 5))
  if packing:
    assert all("segment_ids" in b and "positions" in b for b in reference)
    assert max(b["segment_ids"].max() for b in reference) > 1  # Rows do hold several examples.


def test_state_from_other_settings_is_rejected():
  it = _iterator(_records(20))
  next(it)
  with pytest.raises(DataError, match="other settings.*global_batch_size"):
    _iterator(_records(20), global_batch_size=8).set_state(it.get_state())


def test_finite_epoch_sees_every_kept_record_once_and_counts_drops():
  records = _records(22, long_every=4)  # 5 dropped, 17 kept; 22 // 4 = 5 chunks of records -> 20 read.
  it = _iterator(records, num_epochs=1, shuffle=False)
  batches = list(it)
  assert it.num_dropped == 5
  rows = [tuple(r[r != 0]) for b in batches for r in b["input_ids"] if r.any()]
  expected = [tuple(TOK.encode(r["text"])) for r in records[:20] if "text" in r]
  assert rows == expected
  assert len(batches) == 4 and batches[-1]["attention_mask"][-1].sum() == 0  # Last batch padded with empty rows.


def test_process_slices_concatenate_to_global_batch():
  records = _records(48)
  whole = _take(_iterator(records, global_batch_size=4), 6)
  parts = [_take(_iterator(records, global_batch_size=4, process_index=p, process_count=2), 6) for p in (0, 1)]
  for step in range(6):
    for key in whole[step]:
      assert parts[0][step][key].shape == (2, SEQ)
      np.testing.assert_array_equal(np.concatenate([parts[0][step][key], parts[1][step][key]]), whole[step][key])
  with pytest.raises(DataError, match="multiple of process_count=3"):
    _iterator(records, global_batch_size=4, process_index=0, process_count=3)
  with pytest.raises(DataError, match="process_index=2"):
    _iterator(records, process_index=2, process_count=2)


def test_to_global_arrays_shards_rows():
  mesh = make_mesh(data=2, fsdp=4, tensor=1)
  batch = next(_iterator(_records(40), global_batch_size=8))
  arrays = to_global_arrays(batch, mesh)
  for key, value in batch.items():
    assert arrays[key].shape == value.shape
    assert arrays[key].sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"))
    assert sorted(s.index[0].start for s in arrays[key].addressable_shards) == list(range(8))
    np.testing.assert_array_equal(np.asarray(arrays[key]), value)
  with pytest.raises(DataError, match="not divisible by the 8 shards"):
    to_global_arrays({"input_ids": batch["input_ids"][:4]}, mesh)
  with pytest.raises(DataError, match="not in the mesh axes"):
    to_global_arrays(batch, mesh, batch_axes=("batch",))


def test_bad_record_error_names_file_and_line(tmp_path):
  from pragjax.data import JsonlSource  # pylint: disable=g-import-not-at-top
  path = tmp_path / "train.jsonl"
  path.write_text('{"text": "w1 w2"}\n\n{"prompt": "w1"}\n{"text": "w3 w4"}\n{"text": "w5 w6"}\n', encoding="utf-8")
  it = _iterator(JsonlSource(path), shuffle=False)
  with pytest.raises(DataError, match=r"train\.jsonl, line 3 \(record 1\): record: missing field 'response'"):
    next(it)
