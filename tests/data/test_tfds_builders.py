"""TFDS builders (array_record, no TensorFlow): build from shared/data, read back with tfds.data_source."""

import csv
import json

import pytest

tfds = pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets is not installed")

from pragjax.data import DataError  # pylint: disable=g-import-not-at-top
from pragjax.data import tfds_builders as tb  # pylint: disable=g-import-not-at-top

tfds.disable_progress_bar()


def _jsonl(path):
  return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _csv(path):
  with open(path, encoding="utf-8", newline="") as f:
    return list(csv.DictReader(f))


CASES = {  # name -> (manual subfolder, reader of the source file)
    "processbench/gsm8k": ("processbench", lambda d: json.loads((d / "gsm8k.json").read_text(encoding="utf-8"))),
    "processbench/math": ("processbench", lambda d: json.loads((d / "math.json").read_text(encoding="utf-8"))),
    "math500": ("math500", lambda d: _jsonl(d / "test.jsonl")),
    "gsm8k": ("gsm8k", lambda d: _jsonl(d / "test.jsonl")),
    "trilemma/city_locations": ("trilemma", lambda d: _csv(d / "city_locations.csv")),
    "trilemma/med_indications": ("trilemma", lambda d: _csv(d / "med_indications.csv")),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_build_and_read_back(name, shared_data, tmp_path):
  sub, read = CASES[name]
  records = read(shared_data / sub)
  tb.build(name, shared_data / sub, tmp_path)
  source = tb.data_source(name, tmp_path)
  assert len(source) == len(records) > 0
  raw = tb.data_source(name, tmp_path, decode=False)
  assert isinstance(raw[0][next(k for k, v in raw[0].items() if isinstance(v, bytes))], bytes)
  for i in (0, len(records) // 2, len(records) - 1):  # Source order is kept.
    got, want = source[i], records[i]
    if name.startswith("trilemma"):
      for column, value in want.items():
        expected = value.lower() == "true" if column in ("correct", "real_object") else value
        assert got[column] == expected, column
    else:
      assert got == want


def test_processbench_label_semantics(shared_data, tmp_path):
  tb.build("processbench/gsm8k", shared_data / "processbench", tmp_path)
  source = tb.data_source("processbench/gsm8k", tmp_path)
  labels = [source[i]["label"] for i in range(len(source))]
  assert min(labels) == -1 and all(-1 <= l < len(source[i]["steps"]) for i, l in enumerate(labels))
  assert all(isinstance(s, str) for s in source[0]["steps"])


def test_malformed_sources_name_file_line_and_field(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  (manual / "city_locations.csv").write_text(
      "statement,object_1,object_2,correct_object_2,correct,negation,real_object,category,is_true,is_false,"
      "is_neither,multiclass_label\nA.,a,b,b,TRUE,FALSE,TRUE,cities,TRUE,FALSE,FALSE,1\n"
      "B.,a,b,b,maybe,FALSE,TRUE,cities,TRUE,FALSE,FALSE,1\n", encoding="utf-8")
  with pytest.raises(DataError, match=r"city_locations\.csv, line 3: column 'correct' must be true/false"):
    tb.build("trilemma/city_locations", manual, tmp_path / "out")
  (manual / "test.jsonl").write_text('{"question": "q", "answer": "a", "idx": 0}\n\n{"question": "q", "idx": 1}\n',
                                     encoding="utf-8")
  with pytest.raises(DataError, match=r"test\.jsonl, line 3: missing field 'answer'"):
    tb.build("gsm8k", manual, tmp_path / "out")
  (manual / "math.json").write_text(json.dumps([{"id": "m", "generator": "g", "problem": "p", "steps": ["s"],
                                                 "final_answer_correct": True, "label": 3}]), encoding="utf-8")
  with pytest.raises(DataError, match=r"math\.json, record 0: field 'label'=3"):
    tb.build("processbench/math", manual, tmp_path / "out")
  with pytest.raises(DataError, match="needs a config"):
    tb.build("processbench", manual, tmp_path / "out")
  with pytest.raises(DataError, match="not built"):
    tb.data_source("math500", tmp_path / "empty")
