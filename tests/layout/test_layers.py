"""The layering of `../shared/DESIGN.md`, read from the imports of every module (parsed, not executed).

- `eval/`, `train/`, `data/`, `models/`, `objectives/`, `optim/` import nothing from `methods/`,
  `toyworld/` or `experiments/`;
- nothing under `pragjax/` or `benchmarks/`, and no test, imports an entry point `experiments.<name>`
  (configs under `experiments/configs/` are data and may be read by anyone);
- the module import graph of `pragjax` has no cycles (imports inside functions count too).
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOWER = ("eval", "train", "data", "models", "objectives", "optim")
UPPER = ("pragjax.methods", "pragjax.toyworld", "experiments")


def _modules(top: str):
  for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
    for f in files:
      if f.endswith(".py"):
        path = os.path.join(dirpath, f)
        rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        yield rel.removesuffix(".__init__"), path


def _imports(path: str, module: str) -> set[str]:
  tree = ast.parse(open(path).read(), path)
  out = set()
  package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # relative import
        parts = package.split(".")
        base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
      out.add(base)
      out.update(f"{base}.{a.name}" for a in node.names)
  return out


ALL = {m: _imports(p, m) for top in ("pragjax", "benchmarks", "tests", "experiments") for m, p in _modules(top)}


def _hits(imports, prefixes):
  return sorted(i for i in imports if any(i == p or i.startswith(p + ".") for p in prefixes))


@pytest.mark.parametrize("layer", LOWER)
def test_lower_layers_import_no_method_world_or_entry_point(layer):
  bad = {m: _hits(imps, UPPER) for m, imps in ALL.items() if m.startswith(f"pragjax.{layer}")}
  bad = {m: v for m, v in bad.items() if v}
  assert not bad, f"pragjax/{layer} imports an upper layer: {bad}"


def test_nothing_imports_an_entry_point():
  entries = {m for m in ALL if m.startswith("experiments.") and not m.startswith("experiments.configs")}
  bad = {m: sorted(imps & entries) for m, imps in ALL.items() if imps & entries}
  assert not bad, f"entry points are wiring and import-free: {bad}"
  assert "experiments.sft" in entries and len(entries) >= 8  # the walk saw them


def _module_of(name: str, known: set[str]) -> str | None:
  while name:
    if name in known:
      return name
    name = name.rpartition(".")[0]
  return None


def test_no_import_cycles_in_the_package():
  known = {m for m in ALL if m.startswith("pragjax")}
  graph = {m: {d for i in ALL[m] if (d := _module_of(i, known)) and d != m} for m in known}
  # A package's __init__ importing its own submodules is not a cycle through the package.
  graph = {m: {d for d in deps if not (m.startswith(d + ".") and d in known)} for m, deps in graph.items()}
  state, stack, cycles = {}, [], []

  def visit(m):
    state[m] = 1
    stack.append(m)
    for d in sorted(graph[m]):
      if state.get(d) == 1:
        cycles.append(stack[stack.index(d):] + [d])
      elif d not in state:
        visit(d)
    stack.pop()
    state[m] = 2

  for m in sorted(graph):
    if m not in state:
      visit(m)
  assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles[:10])


def test_every_method_is_a_package_with_a_recipe():
  methods = sorted(m.split(".")[2] for m in ALL if m.startswith("pragjax.methods.") and m.count(".") == 2
                   and os.path.isdir(os.path.join(ROOT, "pragjax", "methods", m.split(".")[2])))
  assert {"sft", "prm", "sami", "priming", "probes"} <= set(methods), methods
  for name in methods:
    assert f"pragjax.methods.{name}.recipe" in ALL, f"pragjax/methods/{name} has no recipe.py"
