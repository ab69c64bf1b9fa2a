"""Markdown tables, the one way every report and summary prints them.

  | method | best-of-1 | best-of-4 |
  |---|---|---|
  | majority | 0.412 | 0.530 |

`markdown_table(rows, columns, formats=..., align=...)`: rows are mappings
(a cell per column key) or sequences (a cell per position). A cell is
rendered by its column's format (a format spec such as `".3f"`, a
`str.format` template such as `"{:.3f}"`, or a callable), else by `str`; a
string cell is kept as it is. A missing cell (absent key, None) is `missing`
("-"); an empty string is an empty cell (`| |`). NaN goes through its format
like any number (a caller that wants "-" for it says so in its format).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

Format = str | Callable[[Any], str]

_RULES = {"": "---", "<": ":---", ">": "---:", "^": ":---:"}


def _render(v, fmt: Format | None, missing: str) -> str:
  if isinstance(v, str):
    return v
  if v is None:
    return missing
  if fmt is None:
    return str(v)
  if callable(fmt):
    return fmt(v)
  return fmt.format(v) if "{" in fmt else format(v, fmt)


def _line(cells: Sequence[str]) -> str:
  return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"


def markdown_table(rows: Sequence[Mapping[str, Any]] | Sequence[Sequence[Any]],
                   columns: Sequence[str] | Mapping[str, str] | None = None, *,
                   formats: Mapping[str, Format] | Format | None = None,
                   align: Sequence[str] | Mapping[str, str] | None = None, missing: str = "-") -> str:
  """A markdown table (module docstring), lines joined by "\\n", no trailing newline.

  Args:
    rows: mappings (cells looked up by column key) or sequences (cells by position).
    columns: for mapping rows, the keys in order (default: the first row's
      keys), or a mapping key -> header text; for sequence rows, the header
      texts (required, one per cell).
    formats: per column (by key; by header text for sequence rows), or one
      for every column: a format spec (".3f"), a `str.format` template
      ("{:.3f}") or a callable `value -> str`. String cells are kept as given.
    align: per column (same keys, or a sequence in column order): "" (plain
      `---`), "<" (`:---`), ">" (`---:`) or "^" (`:---:`).
    missing: the text of an absent or None cell.
  """
  rows = list(rows)
  by_key = bool(rows) and isinstance(rows[0], Mapping)
  if columns is None:
    if not by_key:
      raise ValueError("markdown_table: sequence rows need `columns` (the header texts)")
    columns = list(rows[0])
  keys = list(columns)
  headers = [str(columns[k]) for k in keys] if isinstance(columns, Mapping) else [str(k) for k in keys]
  if not isinstance(formats, Mapping):
    formats = {k: formats for k in keys} if formats is not None else {}
  if align is None:
    align = [""] * len(keys)
  elif isinstance(align, Mapping):
    align = [align.get(k, "") for k in keys]
  if len(align) != len(keys):
    raise ValueError(f"markdown_table: {len(align)} alignments for {len(keys)} columns")
  bad = [a for a in align if a not in _RULES]
  if bad:
    raise ValueError(f"markdown_table: alignment(s) {bad}; expected one of {sorted(_RULES)}")
  lines = [_line(headers), "|" + "|".join(_RULES[a] for a in align) + "|"]
  for i, row in enumerate(rows):
    if by_key:
      values = [row.get(k) for k in keys]
    else:
      values = list(row)
      if len(values) != len(keys):
        raise ValueError(f"markdown_table: row {i} has {len(values)} cells for {len(keys)} columns")
    lines.append(_line([_render(v, formats.get(k), missing) for k, v in zip(keys, values)]))
  return "\n".join(lines)
