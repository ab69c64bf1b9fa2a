"""JSONL sources: errors name file and true line; random access equals eager reading."""

import json
import pickle

import pytest

from pragjax.data import DataError, JsonlSource, read_jsonl, validate_jsonl


def _write(tmp_path, name, text, mode="w"):
  path = tmp_path / name
  if mode == "wb":
    path.write_bytes(text)
  else:
    path.write_text(text, encoding="utf-8")
  return str(path)


def test_bad_json_on_line_3_names_file_and_line(tmp_path):
  path = _write(tmp_path, "bad.jsonl", '{"a": 1}\n{"a": 2}\n{"a": 3,,}\n{"a": 4}\n')
  with pytest.raises(DataError, match=r"bad\.jsonl, line 3: invalid JSON"):
    read_jsonl(path)
  source = JsonlSource(path)  # Indexing does not parse; access does.
  assert len(source) == 4 and source[3] == {"a": 4}
  with pytest.raises(DataError, match=r"bad\.jsonl, line 3: invalid JSON \(.*column"):
    source[2]


def test_blank_lines_skipped_line_numbers_stay_true(tmp_path):
  path = _write(tmp_path, "gaps.jsonl", '{"a": 1}\n\n   \n{"a": 2}\n[1, 2]\n')
  with pytest.raises(DataError, match=r"gaps\.jsonl, line 5: expected a JSON object, got list"):
    read_jsonl(path)
  source = JsonlSource(path)
  assert len(source) == 3
  assert [source.line_number(i) for i in range(3)] == [1, 4, 5]
  with pytest.raises(DataError, match="line 5"):
    source[2]


def test_non_object_line(tmp_path):
  path = _write(tmp_path, "scalar.jsonl", '{"a": 1}\n"just a string"\n')
  with pytest.raises(DataError, match=r"scalar\.jsonl, line 2: expected a JSON object, got str"):
    read_jsonl(path)


def test_validate_names_file_line_and_missing_field(tmp_path):
  path = _write(tmp_path, "fields.jsonl", '{"prompt": "p", "response": "r"}\n\n{"prompt": "q"}\n')
  with pytest.raises(DataError, match=r"fields\.jsonl, line 3: missing field 'response'"):
    validate_jsonl(path, ["prompt", "response"])
  assert validate_jsonl(path, ["prompt"]) == 2


def test_missing_file(tmp_path):
  with pytest.raises(DataError, match="not found"):
    JsonlSource(tmp_path / "nope.jsonl")


def test_random_access_equals_read_jsonl(tmp_path):
  records = [{"i": i, "text": "é ü 漢字 " * (i % 4), "nested": {"xs": list(range(i % 5))}} for i in range(40)]
  lines = []
  for i, r in enumerate(records):
    lines.append(json.dumps(r, ensure_ascii=i % 2 == 0))
    if i % 7 == 0:
      lines.append("  ")
  data = b"\xef\xbb\xbf" + "\r\n".join(lines).encode("utf-8")  # BOM, CRLF, no final newline.
  path = _write(tmp_path, "many.jsonl", data, mode="wb")
  eager = read_jsonl(path)
  assert eager == records
  source = JsonlSource(path)
  assert len(source) == len(records)
  for i in [39, 0, 17, 3, 38, -1]:
    assert source[i] == records[i]
  with pytest.raises(IndexError):
    source[40]
  clone = pickle.loads(pickle.dumps(source))  # grain worker processes pickle sources.
  assert [clone[i] for i in range(len(clone))] == records
