"""Outcome records, pair construction, KTO mismatches, group batches and their checkpointable iterator."""

import numpy as np
import pytest

from pragjax.data.errors import DataError
from pragjax.data.groups import GroupIterator
from pragjax.methods.prm import data as prm_data
from pragjax.toyworld import arithmetic

RECORDS = [
    {"prompt": "p1", "response": "a", "label": 1.0},
    {"prompt": "p1", "response": "b", "label": 0.0},
    {"prompt": "p1", "response": "c", "label": 1.0},
    {"prompt": "p1", "response": "d", "label": 0.0},
    {"prompt": "p2", "response": "e", "label": 1.0},  # all correct
    {"prompt": "p2", "response": "f", "label": 1.0},
    {"prompt": "p3", "response": "g", "label": 0.0},  # all wrong
    {"prompt": "p4", "response": "h", "label": 0.0},
    {"prompt": "p4", "response": "i", "label": 1.0},
]


def test_pairs_are_every_correct_incorrect_combination_and_uniform_prompts_drop():
  pairs, stats = prm_data.build_pairs(RECORDS)
  got = {(p["prompt"], p["chosen"], p["rejected"]) for p in pairs}
  assert got == {("p1", "a", "b"), ("p1", "a", "d"), ("p1", "c", "b"), ("p1", "c", "d"), ("p4", "i", "h")}
  assert len(pairs) == 5 and stats == {"prompts_kept": 2, "prompts_dropped": 2, "pairs": 5, "pairs_available": 5}
  capped, capped_stats = prm_data.build_pairs(RECORDS, max_pairs_per_prompt=2, seed=1)
  assert capped_stats["pairs"] == 3 and {(p["prompt"], p["chosen"], p["rejected"]) for p in capped} <= got
  assert capped == prm_data.build_pairs(RECORDS, max_pairs_per_prompt=2, seed=1)[0]  # seeded
  ce, ce_stats = prm_data.training_records(RECORDS, "ce")
  assert len(ce) == len(RECORDS) and ce_stats["records"] == 9  # CE keeps all-correct and all-wrong prompts


def test_kto_records_mismatch_prompts():
  recs, _ = prm_data.training_records(RECORDS, "kto", seed=3)
  by_response = {r["response"]: r["prompt"] for r in RECORDS}
  for r in recs:
    assert by_response[r["kl_response"]] != r["prompt"]
  with pytest.raises(DataError, match="two different prompts"):
    prm_data.build_kto_records(RECORDS[:2])


def test_outcome_record_formats():
  assert prm_data.outcome_record({"prompt": "q", "response": "r", "label": True}) == {
      "prompt": "q", "response": "r", "label": 1.0}
  assert prm_data.outcome_record({"prompt": "q", "steps": ["a", "b"], "label": 0}, separator="\n")["response"] == \
      "a\nb"
  scan = prm_data.outcome_record({"question": "q", "steps": ["s1", "s2"], "scores": [1, 0.25]})
  assert scan == {"prompt": "q", "response": "s1\n\ns2", "label": 0.25}
  with pytest.raises(DataError, match="record 7: missing field 'label'"):
    prm_data.outcome_record({"prompt": "q", "response": "r"}, where="record 7")
  with pytest.raises(DataError, match="label must be a number in"):
    prm_data.outcome_record({"prompt": "q", "response": "r", "label": 3})
  with pytest.raises(DataError, match="equal length"):
    prm_data.outcome_record({"question": "q", "steps": ["a"], "scores": [1, 0]})


def test_real_stepwise_file_reads(shared_data):
  from pragjax.data.jsonl import read_jsonl

  recs = [prm_data.outcome_record(r) for r in read_jsonl(shared_data / "scan" / "train-100.jsonl")]
  assert len(recs) == 100 and all(0 <= r["label"] <= 1 for r in recs)


def _tokenize(loss, max_length=24):
  tok = arithmetic.tokenizer()
  return tok, lambda r: prm_data.tokenize_group(r, tok, loss=loss, max_length=max_length, chat_template=None)


def test_group_batches_have_response_targets():
  tok, fn = _tokenize("dpo")
  pairs = [{"prompt": "a=1;b?\n", "chosen": "b=1+1=2\n#2\n", "rejected": "#3\n"}]
  batch = prm_data.collate_groups([fn(p) for p in pairs], 24, tok.pad_token_id)
  assert batch["input_ids"].shape == (1, 2, 24) and batch["label"].tolist() == [1.0]
  n_prompt = len(tok.encode("a=1;b?\n"))
  for g, resp in enumerate(["b=1+1=2\n#2\n", "#3\n"]):
    m = batch["loss_mask"][0, g]
    assert m[:n_prompt].sum() == 0 and m.sum() == len(resp) + 1  # response chars + EOS
    assert batch["input_ids"][0, g, n_prompt + len(resp)] == tok.eos_token_id


def test_length_bucket_pads_to_the_batch_longest():
  tok, fn = _tokenize("ce", max_length=64)
  batch = prm_data.collate_groups([fn({"prompt": "a?\n", "response": "#1\n", "label": 1.0})], 64, tok.pad_token_id,
                                  length_bucket=16)
  assert batch["input_ids"].shape == (1, 1, 16)


def test_iterator_resumes_exactly():
  _, fn = _tokenize("ce")
  recs = [{"prompt": f"{c}=1;{c}?\n", "response": f"#{i}\n", "label": float(i % 2)}
          for i, c in enumerate("abcdefghijklmnopq")]
  seqs = lambda r: prm_data.group_sequences(fn(r))
  make = lambda: GroupIterator(recs, seqs, global_batch_size=4, group_size=1, seq_len=24, seed=5, pad_id=0)
  it = make()
  first = [next(it) for _ in range(3)]
  state = it.get_state()
  rest = [next(it) for _ in range(6)]  # crosses an epoch boundary (17 records)
  it2 = make()
  it2.set_state(state)
  for a, b in zip(rest, [next(it2) for _ in range(6)]):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  assert not np.array_equal(first[0]["input_ids"], first[1]["input_ids"])
  with pytest.raises(DataError, match="fewer than one global batch"):
    GroupIterator(recs[:2], seqs, global_batch_size=4, group_size=1, seq_len=24, seed=0, pad_id=0, num_epochs=1)
