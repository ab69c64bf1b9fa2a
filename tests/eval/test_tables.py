"""`pragjax.eval.tables.markdown_table`, and the exact text of the reports' tables built on it."""

import pytest

from pragjax.eval import best_of_n
from pragjax.eval.tables import markdown_table


def test_mapping_rows_with_headers_formats_and_missing_cells():
  rows = [{"name": "a", "acc": 0.5, "n": 3}, {"name": "b", "acc": None, "n": 10, "extra": 1}, {"name": "c", "n": 1}]
  got = markdown_table(rows, {"name": "model", "acc": "accuracy", "n": "n"}, formats={"acc": ".3f"})
  assert got == ("| model | accuracy | n |\n"
                 "|---|---|---|\n"
                 "| a | 0.500 | 3 |\n"
                 "| b | - | 10 |\n"
                 "| c | - | 1 |")


def test_default_columns_are_the_first_rows_keys():
  assert markdown_table([{"x": 1, "y": "u"}, {"x": 2, "y": "v"}]) == "| x | y |\n|---|---|\n| 1 | u |\n| 2 | v |"


def test_sequence_rows_alignment_and_empty_cells():
  got = markdown_table([["t", 4, "2"], ["**micro**", "", 0.25]], ["task", "n", "chance"], formats={"chance": "{:.2f}"},
                       align=["", ">", "^"])
  assert got == "| task | n | chance |\n|---|---:|:---:|\n| t | 4 | 2 |\n| **micro** | | 0.25 |"
  assert markdown_table([[1]], ["a"], align={"a": "<"}).splitlines()[1] == "|:---|"


def test_formats_one_for_all_callables_and_strings_kept():
  got = markdown_table([["x", 0.12345, float("nan")]], ["k", "v", "w"], formats=".2f")
  assert got.splitlines()[2] == "| x | 0.12 | nan |"  # NaN goes through its format; a string cell is kept
  got = markdown_table([{"v": float("nan")}, {"v": 2.0}], formats={"v": lambda v: "-" if v != v else f"{v:g}"})
  assert got.splitlines()[2:] == ["| - |", "| 2 |"]
  assert markdown_table([{"v": None}], missing="n/a").splitlines()[2] == "| n/a |"


def test_header_only_and_errors():
  assert markdown_table([], ["a", "b"]) == "| a | b |\n|---|---|"
  with pytest.raises(ValueError, match="need `columns`"):
    markdown_table([[1, 2]])
  with pytest.raises(ValueError, match="row 1 has 1 cells for 2 columns"):
    markdown_table([[1, 2], [3]], ["a", "b"])
  with pytest.raises(ValueError, match="alignment"):
    markdown_table([[1]], ["a"], align=["right"])
  with pytest.raises(ValueError, match="2 alignments for 1 columns"):
    markdown_table([[1]], ["a"], align=["", ">"])


def test_best_of_n_table_text():
  rows = [best_of_n.BestOfNRow("majority", 1, 0.4, 0.41, 0.3, 0.5, 10),
          best_of_n.BestOfNRow("majority", 4, 0.5, 0.51, 0.4, 0.6, 10),
          best_of_n.BestOfNRow("oracle", 4, 0.9, 0.91, 0.8, 1.0, 10)]
  assert best_of_n.format_table(rows, label="PRM") == (
      "| PRM | best-of-1 | best-of-4 |\n"
      "|---|---|---|\n"
      "| majority | 0.410 [0.300, 0.500] (0.400) | 0.510 [0.400, 0.600] (0.500) |\n"
      "| oracle | - | 0.910 [0.800, 1.000] (0.900) |")
