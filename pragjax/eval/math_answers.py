"""Final answers of math solutions: extraction and mathematical equivalence.

- `extract_answer(text)`: the content of the last `\\boxed{...}` (or `\\fbox{...}`),
  else the number after a GSM8K `####` marker, else what follows "answer is",
  else the last number on the last non-empty line; None if there is none.
- `is_equiv(pred, gold)`: normalized string equality, else numeric equality,
  else symbolic equality by `math-verify` (sympy underneath; pinned in
  setup.py's `math` extra). Without math-verify installed the symbolic step
  is skipped (a clear ImportError is raised only if `require_symbolic`).
- `answer_groups(answers)`: equivalence classes of a list of answers (for
  majority voting): exact normalized keys first, then classes whose
  representatives are equivalent are merged.
"""

from __future__ import annotations

import re
from typing import Sequence

__all__ = ["extract_boxed", "extract_answer", "normalize_answer", "is_equiv", "answer_groups"]

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def extract_boxed(text: str) -> str | None:
  """Content of the last `\\boxed{...}` / `\\fbox{...}` (nested braces matched), or of `\\boxed x`; None if absent."""
  start = max(text.rfind(c) for c in _BOX_COMMANDS)
  if start < 0:
    return None
  rest = text[start:]
  rest = rest[rest.index("x") + 1:] if rest.startswith("\\fbox") else rest[len("\\boxed"):]
  if rest.startswith(" ") and not rest.lstrip().startswith("{"):
    m = re.match(r"\s*([^\s$]+)", rest)
    return m.group(1) if m else None
  rest = rest.lstrip()
  if not rest.startswith("{"):
    return None
  depth = 0
  for i, ch in enumerate(rest):
    depth += ch == "{"
    depth -= ch == "}"
    if depth == 0:
      return rest[1:i]
  return None  # unbalanced


def extract_answer(text: str) -> str | None:
  """The final answer of a solution text (see the module docstring)."""
  if not isinstance(text, str) or not text.strip():
    return None
  boxed = extract_boxed(text)
  if boxed is not None:
    return boxed.strip()
  m = re.search(r"####\s*([^\n]+)", text)
  if m:
    return m.group(1).strip()
  m = list(re.finditer(r"answer is[:\s]*\$?([^\n$]+?)\$?\s*(?:\.\s*)?$", text, flags=re.IGNORECASE | re.MULTILINE))
  if m:
    return m[-1].group(1).strip()
  last_line = [line for line in text.strip().splitlines() if line.strip()][-1]
  numbers = _NUMBER_RE.findall(last_line)
  return numbers[-1] if numbers else None


def _strip_text_commands(s: str) -> str:
  return re.sub(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}", r"\1", s)


def normalize_answer(answer: str | None) -> str | None:
  """A canonical string: no `$`, spaces, `\\left`/`\\right`, `\\!`, degree signs, `\\%`; `dfrac`/`tfrac` -> `frac`;
  thousands separators and trailing `.0` removed from plain numbers; `x = 5` -> `5`."""
  if answer is None:
    return None
  s = _strip_text_commands(str(answer)).strip()
  for old, new in (("\\left", ""), ("\\right", ""), ("\\!", ""), ("\\,", ""), ("\\;", ""), ("\\ ", ""),
                   ("$", ""), ("dfrac", "frac"), ("tfrac", "frac"), ("^{\\circ}", ""), ("^\\circ", ""),
                   ("\\%", ""), ("%", ""), ("\\displaystyle", "")):
    s = s.replace(old, new)
  s = re.sub(r"\s+", "", s).rstrip(".")
  s = re.sub(r"^[a-zA-Z]\w*=", "", s) if s.count("=") == 1 else s
  s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
  if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
    s = s.replace(",", "")
  if re.fullmatch(r"-?\d+\.0+", s):
    s = s.split(".")[0]
  return s


def _as_float(s: str) -> float | None:
  try:
    return float(s)
  except ValueError:
    return None


def _symbolic_equiv(pred: str, gold: str) -> bool:
  from math_verify import parse, verify  # pylint: disable=g-import-not-at-top

  try:
    return bool(verify(parse(f"${gold}$"), parse(f"${pred}$")))
  except Exception:  # math-verify raises on odd input and on timeouts outside the main thread.
    return False


def is_equiv(pred: str | None, gold: str | None, *, require_symbolic: bool = False) -> bool:
  """Whether answer `pred` equals `gold` mathematically (see the module docstring)."""
  if pred is None or gold is None:
    return False
  a, b = normalize_answer(pred), normalize_answer(gold)
  if a == b:
    return True
  fa, fb = _as_float(a), _as_float(b)
  if fa is not None and fb is not None:
    return abs(fa - fb) <= 1e-6 * max(1.0, abs(fb))
  try:
    return _symbolic_equiv(pred, gold)
  except ImportError:
    if require_symbolic:
      raise ImportError("symbolic answer equivalence needs math-verify: pip install -e '.[math]'") from None
    return False


def answer_groups(answers: Sequence[str | None]) -> list[int | None]:
  """Class id of each answer (None stays None); equivalent answers share an id (ids in order of appearance)."""
  reps: list[str] = []
  keys: dict[str, int] = {}
  out: list[int | None] = []
  for ans in answers:
    key = normalize_answer(ans)
    if key is None or key == "":
      out.append(None)
      continue
    if key not in keys:
      keys[key] = next((i for i, r in enumerate(reps) if is_equiv(ans, r)), len(reps))
      if keys[key] == len(reps):
        reps.append(ans)
    out.append(keys[key])
  return out
