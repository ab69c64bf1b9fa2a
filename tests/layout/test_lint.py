"""The repository passes `ruff check` with the settings in ruff.toml (unused imports and names, undefined names,
import order, bug-prone defaults). Skips, saying so, where ruff is not installed (it is pinned in the test extra)."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_ruff_check_is_clean():
  ruff = shutil.which("ruff")
  if ruff is None:
    pytest.skip("ruff is not installed (pip install -e '.[test]' pins it)")
  proc = subprocess.run([ruff, "check", "--no-cache", "--output-format=concise", str(ROOT)], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, f"ruff check found problems (fix with `ruff check --fix .`):\n{proc.stdout}{proc.stderr}"
