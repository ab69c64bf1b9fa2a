"""The workdir: created and checked writable up front, and locked so that one run at a time writes it.

`lock(workdir)` is a context manager around a run. Process 0 creates
`WORKDIR/.pragjax.lock`, a small JSON document naming the host, the process id
(and its start time, so that a reused pid is not mistaken for the owner), the
time and the command; it removes the file when the block ends, however it
ends. Another run on the same workdir fails at once with `WorkdirLockedError`
naming the run that holds it. A lock left by a run that died without cleaning
up (SIGKILL, a crash of the machine) is stale when its host is this host and
its process is gone: it is taken over, with a warning. A lock from another
host cannot be checked from here; the message says which file to delete if
that run is known to be dead.

Taking the lock again in the same process (an entry point, then the training
function it calls on the same workdir) is a no-op. In a multi-process run
process 0 takes the lock and tells the others whether it got it.

On a local filesystem the file is created with `O_CREAT | O_EXCL` (atomic).
Object stores offer no create-if-absent through this path layer, so there a
run writes the lock with a random token, waits `OBJECT_STORE_SETTLE_S` and
reads it back: of two runs racing for it, the last write wins and the other
run, reading someone else's token, fails with `WorkdirLockedError`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import tempfile
import time
import uuid
from typing import Iterator

import jax

from pragjax import paths

LOCK_NAME = ".pragjax.lock"
OBJECT_STORE_SETTLE_S = 2.0  # longer than an object write takes to become visible to readers
_TOKENS: dict[str, str] = {}  # lock path -> the token this process wrote there

log = logging.getLogger(__name__)
_HELD: dict[str, int] = {}  # lock path -> nesting depth in this process


class WorkdirError(OSError):
  pass


class WorkdirLockedError(WorkdirError):
  """Another run holds the workdir; the message names it and how to proceed."""


def prepare(workdir) -> str:
  """Creates `workdir` (local or URI) and checks that it is writable (clear error if not); returns it
  resolved (an absolute path or the URI)."""
  if not workdir:
    raise WorkdirError("--workdir is required (checkpoints, metrics and the exported model go there)")
  path = paths.resolve(workdir)
  try:
    path.mkdir(parents=True, exist_ok=True)
    if paths.is_local(path):
      with tempfile.NamedTemporaryFile(dir=str(path), prefix=".write_test_"):
        pass
    else:
      probe = path / f".write_test_{os.getpid()}"
      probe.write_text("")
      probe.unlink()
  except OSError as e:
    raise WorkdirError(f"workdir {path} is not writable: {e.strerror or e}") from e
  return str(path)


def _start_time(pid: int) -> str | None:
  """The kernel's start time of process `pid` (Linux /proc), None where unavailable."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[19]
  except (OSError, IndexError):
    return None


def _alive(pid: int, start: str | None) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass
  return start is None or _start_time(pid) in (None, start)


def _owner() -> dict:
  return {"host": socket.gethostname(), "pid": os.getpid(), "start": _start_time(os.getpid()),
          "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)[:500],
          "token": uuid.uuid4().hex}


def describe(owner: dict) -> str:
  return (f"pid {owner.get('pid')} on host {owner.get('host')}, since {owner.get('since')}"
          + (f" ({owner['command']})" if owner.get("command") else ""))


def _read(lock_path) -> dict | None:
  try:
    return json.loads(paths.read_text(lock_path))
  except FileNotFoundError:
    return None
  except (OSError, ValueError):
    return {}  # being written, or garbled: treated as held by an unknown run


def _create(lock_path, owner: dict) -> bool:
  """Creates the lock file holding `owner`; False if it exists already."""
  text = json.dumps(owner)
  if paths.is_uri(lock_path):
    path = paths.resolve(lock_path)
    if path.exists():
      return False
    path.write_text(text)
    time.sleep(OBJECT_STORE_SETTLE_S)  # a racing run's write lands meanwhile: the last write wins
    held = _read(lock_path)
    return bool(held) and held.get("token") == owner["token"]
  try:
    fd = os.open(str(lock_path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  except FileExistsError:
    return False
  with os.fdopen(fd, "w") as f:
    f.write(text)
  return True


def _is_stale(owner: dict) -> bool:
  if not owner or owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
    return False
  return not _alive(owner["pid"], owner.get("start"))


def acquire(workdir) -> str:
  """Takes the lock of `workdir` (see the module docstring) -> the lock file's path."""
  lock_path = str(paths.resolve(workdir) / LOCK_NAME)
  owner = _owner()
  for _ in range(3):
    if _create(lock_path, owner):
      _TOKENS[lock_path] = owner["token"]
      return lock_path
    held = _read(lock_path)
    if held is None:
      continue  # released meanwhile
    if _is_stale(held):
      log.warning("taking over the stale lock %s of a run that is gone (%s)", lock_path, describe(held))
      paths.resolve(lock_path).unlink(missing_ok=True)
      continue
    if held and held.get("host") != socket.gethostname():
      hint = f"if that run is dead, delete {lock_path}"
    else:
      hint = "wait for it to finish or stop it"
    who = describe(held) if held else "an unknown run (unreadable lock file)"
    raise WorkdirLockedError(
        f"workdir {paths.resolve(workdir)} is in use by another run: {who}; {hint}, or use another --workdir")
  raise WorkdirLockedError(f"could not take the lock {lock_path}: it keeps changing hands")


def release(lock_path: str) -> None:
  """Removes the lock file if this process still owns it."""
  held = _read(lock_path)
  if held and held.get("pid") == os.getpid() and held.get("host") == socket.gethostname():
    if held.get("token") != _TOKENS.pop(lock_path, held.get("token")):
      return  # written by another run (it won a race on an object store): not ours to remove
    paths.resolve(lock_path).unlink(missing_ok=True)


def _process0_ok(ok: bool) -> bool:
  """Process 0's `ok`, on every process (multi-process runs)."""
  if jax.process_count() == 1:
    return ok
  import numpy as np
  from jax.experimental import multihost_utils

  return bool(multihost_utils.broadcast_one_to_all(np.int32(ok)))


@contextlib.contextmanager
def lock(workdir) -> Iterator[str]:
  """Creates `workdir` if needed (`prepare`) and holds its lock for the block (process 0; re-entrant within a
  process); yields the resolved workdir."""
  resolved = prepare(workdir)
  key = str(paths.resolve(resolved) / LOCK_NAME)
  if key in _HELD:
    _HELD[key] += 1
    try:
      yield resolved
    finally:
      _HELD[key] -= 1
    return
  lock_path = None
  if jax.process_index() == 0:
    try:
      lock_path = acquire(workdir)
    except WorkdirLockedError:
      _process0_ok(False)
      raise
    _process0_ok(True)
  elif not _process0_ok(False):
    raise WorkdirLockedError(f"process 0 could not lock workdir {resolved} (see its log)")
  _HELD[key] = 1
  try:
    yield resolved
  finally:
    del _HELD[key]
    if lock_path is not None:
      release(lock_path)
