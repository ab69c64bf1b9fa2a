"""The one path layer for workdirs: local directories and object-store URIs alike (etils `epath`).

The training layer's reads and writes under a workdir (checkpoints through
orbax, `metrics.jsonl`, TensorBoard files, the HF export, the lock) and the
JSON reports and caches go through these functions, so `--workdir=gs://bucket/run`
works wherever a local directory does.

- `resolve(path)`: an `epath.Path`; local paths are made absolute (`~` expanded),
  URIs (`gs://...`, any `scheme://` epath knows) are kept as they are.
- `write_text` / `write_bytes`: atomic replacement. Locally a temporary file
  in the same directory is renamed over the target; on an object store an
  object becomes visible only once its upload completes, so a direct write is
  already all-or-nothing.
- `save_figure(fig, path)` / `save_npz(path, **arrays)`: plots and score arrays, same rules.
- `local_copy(path)`: a local directory that is `path` itself when local, or a
  temporary one that is uploaded to `path` on exit (for writers that only
  speak to local files, e.g. the safetensors exporter).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator

from etils import epath


def is_uri(path) -> bool:
  return "://" in str(path)


def resolve(path) -> epath.Path:
  """`path` as an `epath.Path`: absolute when local, unchanged when a URI."""
  text = str(path)
  if is_uri(text):
    return epath.Path(text)
  return epath.Path(os.path.abspath(os.path.expanduser(text)))


def is_local(path) -> bool:
  return not is_uri(path)


def _tmp_name(path: epath.Path) -> epath.Path:
  return path.parent / f".{path.name}.tmp-{os.getpid()}"


def write_bytes(path, data: bytes) -> None:
  """Replaces `path` with `data` atomically (see the module docstring); creates parent directories."""
  path = resolve(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  if is_uri(path):
    path.write_bytes(data)
    return
  tmp = _tmp_name(path)
  with open(tmp, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def write_text(path, text: str) -> None:
  write_bytes(path, text.encode("utf-8"))


def save_figure(fig, path, **savefig_kwargs) -> str:
  """Saves a matplotlib figure as PNG at `path`, local or URI (atomic, like `write_bytes`); returns `path`."""
  import io

  buf = io.BytesIO()
  fig.savefig(buf, format="png", **savefig_kwargs)
  write_bytes(path, buf.getvalue())
  return str(path)


def save_npz(path, **arrays) -> None:
  """`numpy.savez_compressed` to `path`, local or URI (atomic)."""
  import io

  import numpy as np

  buf = io.BytesIO()
  np.savez_compressed(buf, **arrays)
  write_bytes(path, buf.getvalue())


def read_text(path) -> str:
  return resolve(path).read_text(encoding="utf-8")


def join(path, *parts) -> str:
  """`path / parts` as a string (a URI stays a URI)."""
  return str(resolve(path).joinpath(*parts))


@contextlib.contextmanager
def local_copy(path, *, publish: bool = True) -> Iterator[str]:
  """Yields a local directory for writers that need one: `path` itself when local, else a temporary
  directory uploaded (file by file, replacing what is there) to `path` when the block ends without error
  and `publish` is true (e.g. on process 0 only)."""
  target = resolve(path)
  if not is_uri(target):
    target.mkdir(parents=True, exist_ok=True)
    yield str(target)
    return
  tmp = tempfile.mkdtemp(prefix="pragjax_upload_")
  try:
    yield tmp
    if publish:
      upload(tmp, target)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def upload(local_dir: str, target) -> None:
  """Copies the files under `local_dir` to `target` (a directory path or URI)."""
  target = resolve(target)
  for root, _, files in os.walk(local_dir):
    rel = os.path.relpath(root, local_dir)
    dest = target if rel == "." else target.joinpath(*rel.split(os.sep))
    dest.mkdir(parents=True, exist_ok=True)
    for name in files:
      with open(os.path.join(root, name), "rb") as f:
        (dest / name).write_bytes(f.read())


def shared_data_dir() -> str:
  """The shared public datasets (trilemma, BIG-bench, ProcessBench, ...): `$PRAGJAX_SHARED_DATA`, else
  `../shared/data` beside the repository checkout."""
  env = os.environ.get("PRAGJAX_SHARED_DATA")
  if env:
    return env
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return os.path.normpath(os.path.join(repo, "..", "shared", "data"))


def fetch_dir(path) -> str:
  """A local directory holding the files under `path`: `path` itself when local, else a fresh temporary copy
  of the objects under the URI (e.g. an exported HF directory to load; the caller may delete it)."""
  if not str(path):
    raise ValueError("fetch_dir: empty path (an empty path would resolve to the working directory)")
  source = resolve(path)
  if not is_uri(source):
    return str(source)
  tmp = tempfile.mkdtemp(prefix="pragjax_fetch_")
  pending = [(source, tmp)]
  while pending:  # level by level: object stores list one directory per call
    directory, local = pending.pop()
    os.makedirs(local, exist_ok=True)
    for item in directory.iterdir():
      if item.is_dir():
        pending.append((item, os.path.join(local, item.name)))
      else:
        with open(os.path.join(local, item.name), "wb") as f:
          f.write(item.read_bytes())
  return tmp
