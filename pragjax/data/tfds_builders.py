"""TFDS builders for the real datasets in `shared/data`: array_record files, no TensorFlow.

Works with `tensorflow-datasets==4.9.10` and `array-record==0.8.6` and
TensorFlow absent: builders write `file_format="array_record"` and are read
back with `tfds.data_source` (random access, grain-compatible), never
`tfds.load` (which needs `tf.data`). Avoid `tfds.list_builders()`: it queries
the community registry on GCS and that path imports TensorFlow.

    build("processbench/gsm8k", manual_dir="shared/data/processbench", data_dir=d)
    src = data_source("processbench/gsm8k", data_dir=d)   # len(src), src[i] -> dict

Each dataset has one split, `test`, in the source file's order (shuffling
disabled; keys are record indices). `data_source(..., decode=True)` turns
tfds' bytes back into `str` and numpy scalars into Python values.

| name | configs | source file(s) in manual_dir |
|---|---|---|
| processbench | gsm8k, math | `{config}.json` (JSON array) |
| math500 | - | `test.jsonl` |
| gsm8k | - | `test.jsonl` |
| trilemma | city_locations, med_indications | `{config}.csv` |

Malformed sources raise DataError naming the file, the line (or record
index for JSON arrays) and the field.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from typing import Any, Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds

from pragjax.data.errors import DataError
from pragjax.data.jsonl import JsonlSource

SPLIT = "test"
FILE_FORMAT = "array_record"
_VERSION = tfds.core.Version("1.0.0")


def _check_file(path: str) -> str:
  if not os.path.isfile(path):
    raise DataError(f"{path}: not found; put the dataset's source file in the manual directory")
  return path


def _require(record: dict, fields: dict[str, type | tuple[type, ...]], where: str) -> None:
  """Every field present with the given type (bool is not accepted for int)."""
  for name, kind in fields.items():
    if name not in record:
      raise DataError(f"{where}: missing field {name!r} (present: {sorted(record)})")
    value = record[name]
    bad_bool = isinstance(value, bool) and kind is int
    if not isinstance(value, kind) or bad_bool:
      want = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
      raise DataError(f"{where}: field {name!r} must be {want}, got {type(value).__name__} ({value!r:.60})")


def _jsonl_records(path: str, fields: dict[str, type]) -> Iterator[tuple[int, dict]]:
  """(index, record) of a JSONL file, each checked for `fields`; errors name file and line."""
  source = JsonlSource(_check_file(path))
  for i in range(len(source)):
    record = source[i]
    _require(record, fields, f"{path}, line {source.line_number(i)}")
    yield i, record


class Processbench(tfds.core.GeneratorBasedBuilder):
  """ProcessBench (Qwen team): step-by-step math solutions with the index of the first wrong step.

  Features: `id`, `generator`, `problem` (text), `steps` (sequence of text),
  `label` (int32: index of the earliest erroneous step, -1 if all steps are
  correct), `final_answer_correct` (bool). Configs `gsm8k` (400) and `math`
  (1,000) read `gsm8k.json` / `math.json` from the manual directory.
  Source: https://huggingface.co/datasets/Qwen/ProcessBench (Apache-2.0).

  Citation: Chujie Zheng, Zhenru Zhang, Beichen Zhang, Runji Lin, Keming Lu,
  Bowen Yu, Dayiheng Liu, Jingren Zhou, Junyang Lin. "ProcessBench:
  Identifying Process Errors in Mathematical Reasoning." arXiv:2412.06559, 2024.
  """

  name = "processbench"
  VERSION = _VERSION
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name="gsm8k", description="ProcessBench cases on GSM8K problems."),
      tfds.core.BuilderConfig(name="math", description="ProcessBench cases on MATH problems."),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Place gsm8k.json and math.json from Qwen/ProcessBench in the manual directory."
  CITATION = """@article{processbench,
  title={ProcessBench: Identifying Process Errors in Mathematical Reasoning},
  author={Chujie Zheng and Zhenru Zhang and Beichen Zhang and Runji Lin and Keming Lu and
          Bowen Yu and Dayiheng Liu and Jingren Zhou and Junyang Lin},
  journal={arXiv preprint arXiv:2412.06559},
  year={2024}
}"""

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__,
        features=tfds.features.FeaturesDict({
            "id": tfds.features.Text(), "generator": tfds.features.Text(), "problem": tfds.features.Text(),
            "steps": tfds.features.Sequence(tfds.features.Text()), "label": np.int32,
            "final_answer_correct": np.bool_}),
        homepage="https://huggingface.co/datasets/Qwen/ProcessBench", citation=self.CITATION, license="Apache-2.0",
        disable_shuffling=True)

  def _split_generators(self, dl_manager):
    path = os.path.join(dl_manager.manual_dir, f"{self.builder_config.name}.json")
    return {SPLIT: self._generate_examples(os.fspath(path))}

  def _generate_examples(self, path: str):
    with open(_check_file(path), encoding="utf-8") as f:
      try:
        records = json.load(f)
      except json.JSONDecodeError as e:
        raise DataError(f"{path}, line {e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from e
    if not isinstance(records, list):
      raise DataError(f"{path}: expected a JSON array of records, got {type(records).__name__}")
    fields = {"id": str, "generator": str, "problem": str, "steps": list, "label": int, "final_answer_correct": bool}
    for i, record in enumerate(records):
      where = f"{path}, record {i}"
      if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
      _require(record, fields, where)
      if not all(isinstance(s, str) for s in record["steps"]):
        raise DataError(f"{where}: field 'steps' must be a list of strings")
      if not -1 <= record["label"] < len(record["steps"]):
        raise DataError(f"{where}: field 'label'={record['label']} is not -1 or a step index "
                        f"(there are {len(record['steps'])} steps)")
      yield i, {k: record[k] for k in fields}


class Math500(tfds.core.GeneratorBasedBuilder):
  """MATH-500: the 500-problem test subset of MATH used by "Let's Verify Step by Step".

  Features (all text): `problem`, `solution`, `answer`, `subject`, `level`,
  `unique_id`; read from `test.jsonl` in the manual directory.
  Source: https://huggingface.co/datasets/HuggingFaceH4/MATH-500 (MIT).

  Citations: Dan Hendrycks, Collin Burns, Saurav Kadavath, Akul Arora, Steven
  Basart, Eric Tang, Dawn Song, Jacob Steinhardt. "Measuring Mathematical
  Problem Solving With the MATH Dataset." NeurIPS Datasets and Benchmarks,
  2021 (arXiv:2103.03874). Hunter Lightman, Vineet Kosaraju, Yura Burda,
  Harri Edwards, Bowen Baker, Teddy Lee, Jan Leike, John Schulman, Ilya
  Sutskever, Karl Cobbe. "Let's Verify Step by Step." arXiv:2305.20050, 2023.
  """

  name = "math500"
  VERSION = _VERSION
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Place test.jsonl from HuggingFaceH4/MATH-500 in the manual directory."
  FIELDS = ("problem", "solution", "answer", "subject", "level", "unique_id")
  CITATION = """@article{hendrycksmath2021,
  title={Measuring Mathematical Problem Solving With the MATH Dataset},
  author={Dan Hendrycks and Collin Burns and Saurav Kadavath and Akul Arora and Steven Basart and Eric Tang and
          Dawn Song and Jacob Steinhardt},
  journal={NeurIPS Datasets and Benchmarks},
  year={2021}
}
@article{lightman2023lets,
  title={Let's Verify Step by Step},
  author={Hunter Lightman and Vineet Kosaraju and Yura Burda and Harri Edwards and Bowen Baker and Teddy Lee and
          Jan Leike and John Schulman and Ilya Sutskever and Karl Cobbe},
  journal={arXiv preprint arXiv:2305.20050},
  year={2023}
}"""

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__,
        features=tfds.features.FeaturesDict({k: tfds.features.Text() for k in self.FIELDS}),
        homepage="https://huggingface.co/datasets/HuggingFaceH4/MATH-500", citation=self.CITATION, license="MIT",
        disable_shuffling=True)

  def _split_generators(self, dl_manager):
    return {SPLIT: self._generate_examples(os.fspath(os.path.join(dl_manager.manual_dir, "test.jsonl")))}

  def _generate_examples(self, path: str):
    for i, record in _jsonl_records(path, dict.fromkeys(self.FIELDS, str)):
      yield i, {k: record[k] for k in self.FIELDS}


class Gsm8k(tfds.core.GeneratorBasedBuilder):
  """GSM8K test split: grade-school math word problems with worked answers ending in `#### <number>`.

  Features: `question`, `answer` (text), `idx` (int32, the record's index in
  the original test split); read from `test.jsonl` in the manual directory.
  Source: https://github.com/openai/grade-school-math (MIT).

  Citation: Karl Cobbe, Vineet Kosaraju, Mohammad Bavarian, Mark Chen, Heewoo
  Jun, Lukasz Kaiser, Matthias Plappert, Jerry Tworek, Jacob Hilton, Reiichiro
  Nakano, Christopher Hesse, John Schulman. "Training Verifiers to Solve Math
  Word Problems." arXiv:2110.14168, 2021.
  """

  name = "gsm8k"
  VERSION = _VERSION
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Place the GSM8K test.jsonl (question, answer, idx) in the manual directory."
  CITATION = """@article{cobbe2021gsm8k,
  title={Training Verifiers to Solve Math Word Problems},
  author={Karl Cobbe and Vineet Kosaraju and Mohammad Bavarian and Mark Chen and Heewoo Jun and Lukasz Kaiser and
          Matthias Plappert and Jerry Tworek and Jacob Hilton and Reiichiro Nakano and Christopher Hesse and
          John Schulman},
  journal={arXiv preprint arXiv:2110.14168},
  year={2021}
}"""

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__,
        features=tfds.features.FeaturesDict({
            "question": tfds.features.Text(), "answer": tfds.features.Text(), "idx": np.int32}),
        homepage="https://github.com/openai/grade-school-math", citation=self.CITATION, license="MIT",
        disable_shuffling=True)

  def _split_generators(self, dl_manager):
    return {SPLIT: self._generate_examples(os.fspath(os.path.join(dl_manager.manual_dir, "test.jsonl")))}

  def _generate_examples(self, path: str):
    for i, record in _jsonl_records(path, {"question": str, "answer": str, "idx": int}):
      yield i, {"question": record["question"], "answer": record["answer"], "idx": record["idx"]}


@dataclasses.dataclass(eq=False)
class TrilemmaConfig(tfds.core.BuilderConfig):
  """A Trilemma CSV: its exact column list (`correct` and `real_object` become bools, the rest text)."""
  columns: tuple[str, ...] = ()


TRILEMMA_BOOL_COLUMNS = ("correct", "real_object")


class Trilemma(tfds.core.GeneratorBasedBuilder):
  """Trilemma of Truth: statements that are true, false, or neither (about synthetic entities).

  Features: `statement` (text), `correct` (bool), `real_object` (bool), and
  every other CSV column as text, under its CSV name (`object_1`,
  `object_2`, `correct_object_2`, `negation`, `category`, ...; `negation`
  stays text as written, `TRUE`/`true`). A statement is true if
  `correct and real_object`, false if `real_object and not correct`, neither
  if not `real_object`. Configs `city_locations` and `med_indications` read
  `{config}.csv` from the manual directory; the header must match the
  config's columns exactly.
  Source: https://huggingface.co/datasets/carlomarxx/trilemma-of-truth,
  code https://github.com/carlomarxdk/trilemma-of-truth (MIT; the data card
  says CC-BY-4.0).

  Citation: Germans Savcisens, Tina Eliassi-Rad. "The Trilemma of Truth in
  Large Language Models." arXiv:2506.23921, 2025 (Mechanistic
  Interpretability Workshop at NeurIPS 2025).
  """

  name = "trilemma"
  VERSION = _VERSION
  BUILDER_CONFIGS = [
      TrilemmaConfig(name="city_locations", description="'The city of X is located in Y.' statements.",
                     columns=("statement", "object_1", "object_2", "correct_object_2", "correct", "negation",
                              "real_object", "category", "is_true", "is_false", "is_neither", "multiclass_label")),
      TrilemmaConfig(name="med_indications", description="'Drug X is indicated for the treatment of Y.' statements.",
                     columns=("statement", "object_1", "object_2", "correct_object_2", "correct", "negation",
                              "real_object", "fake_object", "fictional_object", "category", "freq_1", "freq_2")),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Place city_locations.csv and med_indications.csv from the Trilemma of Truth data."
  CITATION = """@article{savcisens2025trilemma,
  title={The Trilemma of Truth in Large Language Models},
  author={Germans Savcisens and Tina Eliassi-Rad},
  journal={arXiv preprint arXiv:2506.23921},
  year={2025}
}"""

  def _info(self) -> tfds.core.DatasetInfo:
    columns = self.builder_config.columns
    features = {c: (np.bool_ if c in TRILEMMA_BOOL_COLUMNS else tfds.features.Text()) for c in columns}
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__, features=tfds.features.FeaturesDict(features),
        homepage="https://github.com/carlomarxdk/trilemma-of-truth", citation=self.CITATION, license="MIT",
        disable_shuffling=True)

  def _split_generators(self, dl_manager):
    path = os.path.join(dl_manager.manual_dir, f"{self.builder_config.name}.csv")
    return {SPLIT: self._generate_examples(os.fspath(path))}

  def _generate_examples(self, path: str):
    columns = self.builder_config.columns
    with open(_check_file(path), encoding="utf-8", newline="") as f:
      reader = csv.DictReader(f)
      header = tuple(reader.fieldnames or ())
      if header != columns:
        missing = [c for c in columns if c not in header]
        extra = [c for c in header if c not in columns]
        raise DataError(f"{path}, line 1: header does not match config {self.builder_config.name!r}: "
                        f"missing columns {missing}, unexpected columns {extra}")
      for i, row in enumerate(reader):
        where = f"{path}, line {reader.line_num}"
        if None in row or any(row[c] is None for c in columns):
          raise DataError(f"{where}: expected {len(columns)} columns, got a row of another width")
        yield i, {c: (_parse_bool(row[c], c, where) if c in TRILEMMA_BOOL_COLUMNS else row[c]) for c in columns}


def _parse_bool(value: str, column: str, where: str) -> bool:
  lowered = value.strip().lower()
  if lowered not in ("true", "false"):
    raise DataError(f"{where}: column {column!r} must be true/false, got {value!r}")
  return lowered == "true"


BUILDERS = {cls.name: cls for cls in (Processbench, Math500, Gsm8k, Trilemma)}


def _split_name(name: str) -> tuple[type, str | None]:
  base, _, config = name.partition("/")
  if base not in BUILDERS:
    raise DataError(f"unknown dataset {base!r}; known: {sorted(BUILDERS)}")
  cls = BUILDERS[base]
  configs = [c.name for c in cls.BUILDER_CONFIGS]
  if configs and config not in configs:
    raise DataError(f"dataset {base!r} needs a config, one of {configs} (as '{base}/{configs[0]}'), got {config!r}")
  if not configs and config:
    raise DataError(f"dataset {base!r} has no configs, got {config!r}")
  return cls, config or None


def build(name: str, manual_dir, data_dir) -> tfds.core.DatasetBuilder:
  """Builds dataset `name` ('processbench/gsm8k', 'math500', ...) from `manual_dir` into `data_dir` (array_record).

  A no-op when already built there. No network: GCS lookups are disabled.
  """
  cls, config = _split_name(name)
  if not os.path.isdir(manual_dir):
    raise DataError(f"{manual_dir}: manual directory not found (it should hold the source files of {name!r})")
  builder = cls(config=config, data_dir=os.fspath(data_dir), file_format=FILE_FORMAT)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=os.fspath(manual_dir), try_download_gcs=False))
  return builder


def _to_python(value: Any) -> Any:
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, np.ndarray):
    return [_to_python(v) for v in value.tolist()] if value.ndim else _to_python(value.item())
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, (list, tuple)):
    return [_to_python(v) for v in value]
  if isinstance(value, dict):
    return {k: _to_python(v) for k, v in value.items()}
  return value


class DecodedSource:
  """A tfds data source whose records come back with `str` text and Python scalars (random access, picklable)."""

  def __init__(self, source: Sequence[dict]):
    self.source = source

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index) -> dict:
    return _to_python(self.source[index])

  def __repr__(self) -> str:
    return f"DecodedSource({self.source!r})"


def data_source(name: str, data_dir, split: str = SPLIT, decode: bool = True) -> Sequence[dict]:
  """The built records of `name` in `data_dir`, via `tfds.data_source` (no TensorFlow, nothing built here)."""
  _split_name(name)
  try:
    source = tfds.data_source(name, split=split, data_dir=os.fspath(data_dir), download=False)
  except Exception as e:  # tfds raises AssertionError / DatasetNotFoundError for unbuilt data.
    raise DataError(f"{name!r} split {split!r} is not built in {data_dir} ({type(e).__name__}: {e}); "
                    f"run pragjax.data.tfds_builders.build first") from e
  return DecodedSource(source) if decode else source
