"""The authors' SAMI protocol: well-formed distinct training pairs, and the reported iteration chosen on validation."""

import math

import pytest

from pragjax.methods.sami import iterate
from pragjax.methods.sami import recipe as sami
from pragjax.methods.sami import toy_eval as sami_toy
from pragjax.methods.sami.sampling import Response


def _group(query, *texts):
  return iterate.Group(query, [None] * len(texts), [Response([1], t, True) for t in texts])


def test_filter_groups_drops_duplicates_and_malformed_pairs():
  q = "clothes water weather"  # vocabulary: belt boot cap coat ... bay cove lake pond ...
  groups = [_group(q, "belt lake", "coat cap"),  # kept
            _group(q, "belt lake", " belt lake "),  # the same text: duplicate
            _group(q, "belt lake", "Belt lake"),  # mixed case: malformed in the toy world
            _group(q, "belt apple", "boot pond")]  # a word outside the query's vocabulary: malformed
  assert sami_toy.well_formed(q, "belt lake") and not sami_toy.well_formed(q, "Belt lake")
  kept, stats = iterate.filter_groups(groups, "paper", sami_toy.well_formed)
  assert kept == groups[:1]
  assert stats == {"groups": 4, "kept": 1, "dropped_duplicate": 1, "dropped_malformed": 2}
  kept, stats = iterate.filter_groups(groups, "distinct", sami_toy.well_formed)
  assert kept == [groups[0], groups[2], groups[3]] and stats["dropped_duplicate"] == 1
  assert iterate.filter_groups(groups, "none")[0] == groups
  with pytest.raises(ValueError, match="sami.filter"):
    iterate.filter_groups(groups, "strict")


def test_select_iteration_uses_validation_never_test():
  rows = [{"iteration": 0, "win_rate": 0.5, "mi_bound": 0.1, "val_win_rate": 0.5, "val_mi_bound": 0.1,
           "mean_tokens_positive": 9.0},
          {"iteration": 1, "win_rate": 0.70, "mi_bound": 0.3, "val_win_rate": 0.55, "val_mi_bound": 0.4,
           "mean_tokens_positive": 7.0},
          {"iteration": 2, "win_rate": 0.60, "mi_bound": 0.5, "val_win_rate": 0.62, "val_mi_bound": 0.2,
           "mean_tokens_positive": 5.0},
          {"iteration": 3, "win_rate": 0.90, "mi_bound": 0.6, "val_win_rate": 0.62, "val_mi_bound": 0.3,
           "mean_tokens_positive": 4.0}]
  sel = sami.select_iteration(rows, "win_rate")
  # Iteration 3 has the best test win rate, but 2 ties it on validation and comes first.
  assert sel["iteration"] == 2 and sel["val_value"] == 0.62 and sel["test"]["win_rate"] == 0.60
  assert sel["val_values"] == {1: 0.55, 2: 0.62, 3: 0.62} and sel["test"]["mean_tokens_positive"] == 5.0
  assert sami.select_iteration(rows, "mi_bound")["iteration"] == 1
  assert sami.select_iteration(rows, "") is None
  assert sami.select_iteration([{"iteration": 1, "win_rate": 0.7, "mi_bound": 0.2}], "win_rate") is None
  with pytest.raises(ValueError, match="select_by"):
    sami.select_iteration(rows, "loss")
  assert not math.isnan(sel["test"]["mi_bound"])
