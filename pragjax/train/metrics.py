"""Metric writers: `metrics.jsonl` (one JSON object per logged step) and
TensorBoard event files (tensorboardX; no TensorFlow). Only process 0 writes.

The workdir may be local or an object-store URI (`pragjax.paths`).
Locally rows are appended as they come; on an object store, which cannot
append, the file is rewritten whole (at most every `upload_every` seconds, and
on `flush`/`close`), and TensorBoard writes to a local directory that is
uploaded to `WORKDIR/tb` on `flush`/`close`.

A resumed run calls `truncate_after(step)` first, so the rows of the steps it
replays are not written twice. `write_json(name, obj)` writes a one-off
report beside them (e.g. the loop's `compile.json`), replacing it whole.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from typing import Mapping

import jax

from pragjax import paths


def _parse_rows(text: str) -> list[dict]:
  return [json.loads(line) for line in text.splitlines() if line.strip()]


def _unique_suffix() -> str:
  """Event files are named by the second and the host; a writer opened within the same second as an earlier one
  (a resume, a restart) would reuse, and truncate, its file without a suffix of its own. Nanoseconds (19 digits)
  keep the names in the order of creation, which is the order TensorBoard reads them (and purges) in."""
  return f".{time.time_ns():019d}"


class MetricWriter:

  def __init__(self, workdir, *, tensorboard: bool = True, upload_every: float = 30.0):
    self.enabled = jax.process_index() == 0
    self.workdir = paths.resolve(workdir)
    self.path = str(self.workdir / "metrics.jsonl")
    self.remote = paths.is_uri(self.workdir)
    self.upload_every = upload_every
    self._rows: list[dict] | None = None  # remote: every row, rewritten whole
    self._uploaded = 0.0
    self._tb = self._tb_local = None
    if self.enabled:
      self.workdir.mkdir(parents=True, exist_ok=True)
      if self.remote:
        self._rows = self.rows()
      if tensorboard:
        from tensorboardX import SummaryWriter

        if self.remote:
          self._tb_local = tempfile.mkdtemp(prefix="pragjax_tb_")
        self._tb = SummaryWriter(self._tb_dir(), filename_suffix=_unique_suffix())

  def _tb_dir(self) -> str:
    return self._tb_local or str(self.workdir / "tb")

  def rows(self) -> list[dict]:
    path = paths.resolve(self.path)
    return _parse_rows(path.read_text()) if path.exists() else []

  def write(self, step: int, metrics: Mapping[str, float], *, prefix: str = "") -> None:
    if not self.enabled:
      return
    row = {"step": int(step)}
    for k, v in metrics.items():
      v = float(v)
      row[prefix + k] = v if math.isfinite(v) else str(v)
    if self._rows is not None:
      self._rows.append(row)
      if time.monotonic() - self._uploaded >= self.upload_every:
        self._upload_rows()
    else:
      with open(self.path, "a") as f:
        f.write(json.dumps(row) + "\n")
    if self._tb is not None:
      for k, v in row.items():
        if k != "step" and isinstance(v, float):
          self._tb.add_scalar(k, v, step)

  def write_json(self, name: str, obj: Mapping) -> None:
    """Writes `obj` as `WORKDIR/name` (process 0; replaces the file atomically)."""
    if self.enabled:
      paths.write_text(self.workdir / name, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")

  def _upload_rows(self) -> None:
    paths.write_text(self.path, "".join(json.dumps(r) + "\n" for r in self._rows))
    self._uploaded = time.monotonic()

  def truncate_after(self, step: int) -> int:
    """Drops the rows of steps after `step` (they are about to be replayed); returns how many.

    TensorBoard: when rows were dropped, the event writer restarts with `purge_step = step + 1`, a session-start
    event by which TensorBoard hides the earlier files' events of those steps, so a resumed run's curves hold
    each step once."""
    if not self.enabled:
      return 0
    rows = self._rows if self._rows is not None else self.rows()
    keep = [r for r in rows if int(r.get("step", 0)) <= step]
    if len(keep) != len(rows):
      if self._rows is not None:
        self._rows = keep
      paths.write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))
      if self._tb is not None:
        from tensorboardX import SummaryWriter

        self._tb.close()
        self._tb = SummaryWriter(self._tb_dir(), purge_step=int(step) + 1, filename_suffix=_unique_suffix())
    return len(rows) - len(keep)

  def last_logged(self) -> dict:
    """The newest row with a `loss` (without `step`), e.g. for a run that resumes at its last step."""
    rows = self._rows if self._rows is not None else (self.rows() if self.enabled else [])
    for row in reversed(rows):
      if "loss" in row:
        return {k: float(v) for k, v in row.items() if k != "step" and isinstance(v, (int, float, str))}
    return {}

  def flush(self) -> None:
    if self._rows is not None:
      self._upload_rows()
    if self._tb is not None:
      self._tb.flush()
      if self._tb_local:
        paths.upload(self._tb_local, self.workdir / "tb")

  def close(self) -> None:
    if self._rows is not None:
      self._upload_rows()
    if self._tb is not None:
      self._tb.close()
      if self._tb_local:
        paths.upload(self._tb_local, self.workdir / "tb")
        shutil.rmtree(self._tb_local, ignore_errors=True)
    self._tb = self._tb_local = None


def read_metrics(workdir) -> list[dict]:
  """Rows of `workdir/metrics.jsonl` (for tests, plots and reports)."""
  path = paths.resolve(workdir) / "metrics.jsonl"
  if not path.exists():
    return []
  return _parse_rows(path.read_text())
