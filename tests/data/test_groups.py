"""Group batches: collate shapes, padding, slot mask, extra keys, errors; the group iterator's seeded order, exact
resume, process slices, dropped examples and length buckets."""

import json

import numpy as np
import pytest

from pragjax.data import DataError, GroupIterator, collate_groups


def _seq(n, start=1, **extra):
  ids = np.arange(start, start + n, dtype=np.int32)
  mask = np.r_[0, np.ones(n - 1)].astype(np.int32) if n else np.zeros(0, np.int32)
  return {"input_ids": ids, "loss_mask": mask, **extra}


def test_collate_shapes_padding_slot_mask_and_extras():
  groups = [
      [_seq(3, label=1.0, steps=2, step_end=np.asarray([0, 1, 1])), _seq(5, 10, label=0.0, steps=1,
                                                                         step_end=np.asarray([0, 0, 0, 0, 1]))],
      [_seq(2, 20, label=0.5, steps=4, step_end=np.asarray([1, 1]))],  # one slot empty
  ]
  b = collate_groups(groups, group_size=3, pad_id=7)
  for k in ("input_ids", "attention_mask", "loss_mask", "step_end"):
    assert b[k].shape == (2, 3, 16) and b[k].dtype == np.int32, k
  assert b["label"].shape == (2, 3) and b["label"].dtype == np.float32
  assert b["steps"].dtype == np.int32 and b["steps"].tolist() == [[2, 1, 0], [4, 0, 0]]
  assert b["slot_mask"].tolist() == [[1, 1, 0], [1, 0, 0]]
  np.testing.assert_array_equal(b["label"], [[1.0, 0.0, 0.0], [0.5, 0.0, 0.0]])
  assert b["input_ids"][0, 1, :6].tolist() == [10, 11, 12, 13, 14, 7]
  assert b["attention_mask"][0, 1].sum() == 5 and b["attention_mask"][0, 0].sum() == 3
  assert b["loss_mask"][0, 1].tolist()[:6] == [0, 1, 1, 1, 1, 0]
  assert b["step_end"][0, 0, :4].tolist() == [0, 1, 1, 0]
  # Empty slots: all padding, attention 0.
  assert np.all(b["input_ids"][1, 1:] == 7) and b["attention_mask"][1, 1:].sum() == 0
  assert b["loss_mask"][1, 1:].sum() == 0 and b["step_end"][1, 1:].sum() == 0
  # A None entry is an empty slot in the middle of a group; soft per-token values stay floats.
  b = collate_groups([[None, _seq(2, weight=np.asarray([0.25, 0.5]))]], group_size=2, pad_to_multiple_of=4)
  assert b["slot_mask"].tolist() == [[0, 1]] and b["input_ids"].shape == (1, 2, 4)
  assert b["weight"].dtype == np.float32 and b["weight"][0, 1, :3].tolist() == [0.25, 0.5, 0.0]


def test_collate_lengths():
  assert collate_groups([[_seq(17)]], group_size=1)["input_ids"].shape == (1, 1, 32)
  assert collate_groups([[_seq(16)]], group_size=1)["input_ids"].shape == (1, 1, 16)
  assert collate_groups([[_seq(1)]], group_size=1, pad_to_multiple_of=1)["input_ids"].shape == (1, 1, 2)
  assert collate_groups([[_seq(17)]], group_size=2, seq_len=20)["input_ids"].shape == (1, 2, 20)


def test_collate_errors():
  with pytest.raises(ValueError, match="group 1, slot 0: 21 tokens, more than seq_len=20"):
    collate_groups([[_seq(3)], [_seq(21)]], group_size=1, seq_len=20)
  with pytest.raises(DataError, match="group 0 has 3 sequences, more than group_size=2"):
    collate_groups([[_seq(2)] * 3], group_size=2)
  with pytest.raises(DataError, match=r"group 0, slot 1: keys .* differ"):
    collate_groups([[_seq(2, label=1.0), _seq(2)]], group_size=2)
  with pytest.raises(DataError, match="'step_end' has 1 entries, input_ids 3"):
    collate_groups([[_seq(3, step_end=np.asarray([1]))]], group_size=1)
  with pytest.raises(DataError, match="missing"):
    collate_groups([[{"input_ids": np.arange(3)}]], group_size=1)
  with pytest.raises(DataError, match="derived"):
    collate_groups([[_seq(3, attention_mask=np.ones(3))]], group_size=1)


def _examples(n=23):
  """Example i has length 2 + (i * 7) % 13; those with i % 5 == 4 drop (tokenize -> None)."""
  return [{"id": i, "n": 2 + (i * 7) % 13, "drop": i % 5 == 4} for i in range(n)]


def _tokenize(ex):
  if ex["drop"]:
    return None
  return [_seq(ex["n"], ex["id"] * 100, label=float(ex["id"])), _seq(2, ex["id"] * 100 + 50, label=-1.0)]


def _make(examples=None, **kw):
  args = dict(global_batch_size=4, group_size=2, seed=3, process_index=0, process_count=1)
  args.update(kw)
  return GroupIterator(_examples() if examples is None else examples, _tokenize, **args)


def _ids(batch):
  return [int(x) for x in batch["label"][:, 0]]


def _take(it, k):
  return [next(it) for _ in range(k)]


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_seeded_order_epochs_and_dropped_counting():
  examples = _examples()
  kept = [e["id"] for e in examples if not e["drop"]]  # 19 kept, 4 dropped
  it = _make()
  batches = _take(it, 14)  # 56 groups: nearly three epochs of 19
  _assert_same(batches, _take(_make(), 14))
  assert _ids(_take(_make(seed=4), 1)[0]) != _ids(batches[0])
  stream = [i for b in batches for i in _ids(b)]
  epochs = [np.random.default_rng([3, e]).permutation(23) for e in range(3)]
  want = [int(i) for order in epochs for i in order if not examples[i]["drop"]]
  assert stream == want[:56]
  assert sorted(stream[:19]) == kept and sorted(stream[19:38]) == kept  # each epoch: every kept example once
  assert stream[:19] != stream[19:38]  # a new permutation per epoch
  assert it.num_dropped == 4  # once per example, not per epoch
  assert _ids(_take(_make(shuffle=False), 1)[0]) == [0, 1, 2, 3]
  b = batches[0]
  assert b["input_ids"].shape[:2] == (4, 2) and b["input_ids"].shape[2] % 16 == 0
  assert set(b) == {"input_ids", "attention_mask", "loss_mask", "label", "slot_mask"}


def test_finite_epochs_end_and_every_example_dropped():
  it = _make(num_epochs=1)
  batches = list(it)
  assert len(batches) == 19 // 4 and it.num_dropped == 4
  with pytest.raises(StopIteration):
    next(it)
  assert it.num_dropped == 4
  everything = [dict(e, drop=True) for e in _examples(6)]
  with pytest.raises(DataError, match="every training example was dropped"):
    next(_make(everything))


@pytest.mark.parametrize("length_bucket", [0, 3])
def test_exact_resume_mid_epoch_through_json(length_bucket):
  it = _make(length_bucket=length_bucket)
  _take(it, 5)  # mid-epoch, and (length_bucket=3) mid-window
  state = json.loads(json.dumps(it.get_state()))
  rest = _take(it, 12)  # crosses epoch boundaries
  again = _make(length_bucket=length_bucket)
  again.set_state(state)
  _assert_same(rest, _take(again, 12))
  assert again.num_dropped == it.num_dropped == 4
  assert again.get_state() == it.get_state()
  # The state does not depend on the process count: it resumes on 2 processes too.
  halves = [_make(length_bucket=length_bucket, process_index=p, process_count=2) for p in range(2)]
  for h in halves:
    h.set_state(state)
  for whole, a, b in zip(rest, _take(halves[0], 12), _take(halves[1], 12)):
    np.testing.assert_array_equal(np.concatenate([a["input_ids"], b["input_ids"]]), whole["input_ids"])
  with pytest.raises(DataError, match="other settings"):
    _make(seed=9).set_state(state)
  with pytest.raises(DataError, match="older iterator"):
    _make().set_state({"index": 2})


@pytest.mark.parametrize("processes", [2, 4])
@pytest.mark.parametrize("seq_len", [None, 24])
def test_process_slices_are_disjoint_and_make_the_global_batch(processes, seq_len):
  whole = _take(_make(global_batch_size=8, seq_len=seq_len), 6)
  parts = [_take(_make(global_batch_size=8, seq_len=seq_len, process_index=p, process_count=processes), 6)
           for p in range(processes)]
  for step, full in enumerate(whole):
    local = [parts[p][step] for p in range(processes)]
    ids = [_ids(b) for b in local]
    assert all(len(i) == 8 // processes for i in ids)
    assert len(set().union(*map(set, ids))) == 8  # disjoint (a batch never repeats an example)
    for k in full:  # same T on every process, and the concatenation is the 1-process batch
      np.testing.assert_array_equal(np.concatenate([b[k] for b in local]), full[k], err_msg=k)


def test_batch_size_must_divide_among_processes():
  with pytest.raises(ValueError, match="train.batch_size"):
    _make(global_batch_size=6, process_index=0, process_count=4)
  with pytest.raises(DataError, match="process_index=2"):
    _make(process_index=2, process_count=2)
  with pytest.raises(DataError, match="fewer than one global batch"):
    _make(_examples(3), num_epochs=1)


def test_length_buckets_group_similar_lengths():
  def lengths(batches):
    return [int(b["attention_mask"][:, 0].sum(-1).max() - b["attention_mask"][:, 0].sum(-1).min()) for b in batches]

  plain = _take(_make(global_batch_size=4), 16)
  bucketed = _take(_make(global_batch_size=4, length_bucket=4), 16)
  # The same groups over the first windows, in another order: 16 batches = 4 windows of 4 batches.
  assert sorted(i for b in plain for i in _ids(b)) == sorted(i for b in bucketed for i in _ids(b))
  assert np.mean(lengths(bucketed)) < 0.5 * np.mean(lengths(plain))
  assert sum(b["input_ids"].shape[2] for b in bucketed) <= sum(b["input_ids"].shape[2] for b in plain)
  # Within a window the batch order is shuffled (not always short to long) and seeded.
  order = [int(b["attention_mask"][:, 0].sum(-1).min()) for b in bucketed]
  assert any(order[w * 4:(w + 1) * 4] != sorted(order[w * 4:(w + 1) * 4]) for w in range(4))
  _assert_same(bucketed, _take(_make(global_batch_size=4, length_bucket=4), 16))
  unshuffled = _take(_make(global_batch_size=4, length_bucket=4, shuffle=False), 4)
  lows = [int(b["attention_mask"][:, 0].sum(-1).min()) for b in unshuffled]
  assert lows == sorted(lows)


def test_tokenize_errors_name_the_example():
  def bad(ex):
    if ex["id"] == 5:
      raise DataError("no prompt")
    return _tokenize(ex)

  it = GroupIterator(_examples(), bad, global_batch_size=4, group_size=2, shuffle=False, process_index=0,
                     process_count=1)
  with pytest.raises(DataError, match="example 5: no prompt"):
    _take(it, 2)
  with pytest.raises(DataError, match="example 0, slot 0: 3 tokens, more than seq_len=2"):
    next(GroupIterator([{"id": 0, "n": 3, "drop": False}] * 4, _tokenize, global_batch_size=4, group_size=2,
                       seq_len=2, shuffle=False, process_index=0, process_count=1))
  with pytest.raises(DataError, match="more than group_size=1"):
    next(GroupIterator(_examples(), _tokenize, global_batch_size=4, group_size=1, process_index=0, process_count=1))
