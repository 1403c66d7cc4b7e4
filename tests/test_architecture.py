"""The package's structure: which module may import which, read from the source rather than by importing it.

The graph counts every import statement, including those inside functions (a lazy import hides a circle
from the interpreter, not from a reader). An edge goes from a module to the vlfusion module it names:
`from vlfusion.data import scenes` names `vlfusion.data.scenes`; `from vlfusion.data.scenes import Obj`
names `vlfusion.data.scenes` too.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = "vlfusion"


def _module_name(path: pathlib.Path, root: pathlib.Path) -> str:
  parts = list(path.relative_to(root).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


def _modules(root: pathlib.Path = ROOT) -> dict[str, pathlib.Path]:
  return {_module_name(p, root): p for p in sorted((root / PACKAGE).rglob("*.py"))}


class _Import:
  """One import of a vlfusion module: who, whom, which line, and the names taken from it."""

  def __init__(self, source: str, target: str, line: int, names: tuple[str, ...] = ()):
    self.source, self.target, self.line, self.names = source, target, line, names

  def __repr__(self):
    taken = f" ({', '.join(self.names)})" if self.names else ""
    return f"{self.source}:{self.line} -> {self.target}{taken}"


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
  if not node.level:
    return node.module or ""
  base = module.split(".")
  if not is_package:
    base = base[:-1]
  base = base[: len(base) - (node.level - 1)]
  return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: pathlib.Path, modules: dict[str, pathlib.Path]):
  """(imports, private attribute uses) of one module: every import statement, lazy ones included."""
  tree = ast.parse(path.read_text(), filename=str(path))
  is_package = path.name == "__init__.py"
  found, aliases = [], {}
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.split(".")[0] == PACKAGE and alias.name in modules:
          found.append(_Import(module, alias.name, node.lineno))
          if alias.asname:
            aliases[alias.asname] = alias.name
    elif isinstance(node, ast.ImportFrom):
      base = _absolute(module, is_package, node)
      if base.split(".")[0] != PACKAGE:
        continue
      names = []
      for alias in node.names:
        if f"{base}.{alias.name}" in modules:  # a submodule, imported as a name of its package.
          found.append(_Import(module, f"{base}.{alias.name}", node.lineno))
          aliases[alias.asname or alias.name] = f"{base}.{alias.name}"
        else:
          names.append(alias.name)
      if names and base in modules:
        found.append(_Import(module, base, node.lineno, tuple(names)))
  private_uses = [
    (module, node.lineno, f"{aliases[node.value.id]}.{node.attr}")
    for node in ast.walk(tree)
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
    and node.attr.startswith("_") and not node.attr.startswith("__")
    and aliases[node.value.id] != module
  ]
  return found, private_uses


def import_graph(root: pathlib.Path = ROOT):
  """({module: [its imports of vlfusion modules]}, [private attribute uses]) over the package's source."""
  modules = _modules(root)
  graph, private_uses = {}, []
  for name, path in modules.items():
    graph[name], uses = _imports(name, path, modules)
    private_uses += uses
  return graph, private_uses


def find_cycles(graph: dict[str, list[_Import]]) -> list[list[str]]:
  """One closed path per strongly connected group of modules (Tarjan), e.g. [a, b, a]."""
  edges = {m: sorted({i.target for i in imps if i.target != m}) for m, imps in graph.items()}
  index, low, stack, on_stack, groups = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in edges.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      group = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        group.append(w)
        if w == v:
          break
      if len(group) > 1:
        groups.append(set(group))

  for v in sorted(edges):
    if v not in index:
      visit(v)
  return [_closed_path(edges, group) for group in groups]


def _closed_path(edges, group):
  """A shortest path from the group's first module back to itself, inside the group."""
  start = min(group)
  paths, seen = [[start]], set()
  while paths:
    path = paths.pop(0)
    for w in edges[path[-1]]:
      if w == start:
        return path + [start]
      if w in group and w not in seen:
        seen.add(w)
        paths.append(path + [w])
  return sorted(group)


@pytest.fixture(scope="module")
def graph():
  return import_graph()


def test_the_graph_sees_lazy_and_relative_imports(tmp_path):
  """The walk finds an import inside a function, a submodule imported as a name, and a private name."""
  package = tmp_path / PACKAGE / "sub"
  package.mkdir(parents=True)
  (tmp_path / PACKAGE / "__init__.py").write_text("")
  (package / "__init__.py").write_text("")
  (package / "a.py").write_text("def f():\n  from vlfusion.sub import b\n  return b._hidden\n")
  (package / "b.py").write_text("from .a import f, _g\n")
  graph, private_uses = import_graph(tmp_path)
  assert [i.target for i in graph["vlfusion.sub.a"]] == ["vlfusion.sub.b"]
  assert [(i.target, i.names) for i in graph["vlfusion.sub.b"]] == [("vlfusion.sub.a", ("f", "_g"))]
  assert find_cycles(graph) == [["vlfusion.sub.a", "vlfusion.sub.b", "vlfusion.sub.a"]]
  assert private_uses == [("vlfusion.sub.a", 3, "vlfusion.sub.b._hidden")]


def test_no_import_cycles(graph):
  cycles = find_cycles(graph[0])
  assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_private_names_across_modules(graph):
  graph, private_uses = graph
  imported = [
    f"{i}" for imps in graph.values() for i in imps
    if any(n.startswith("_") and not n.startswith("__") for n in i.names)
  ]
  used = [f"{m}:{line} uses {name}" for m, line, name in private_uses]
  assert not imported + used, "private names reached across modules:\n" + "\n".join(imported + used)


@pytest.mark.parametrize("layer, forbidden", [
    ("vlfusion.training", ("vlfusion.evaluation", "vlfusion.experiment")),
    ("vlfusion.evaluation", ("vlfusion.training", "vlfusion.experiment")),
    ("vlfusion.data", ("vlfusion.evaluation", "vlfusion.training")),
    ("vlfusion.tasks", ("vlfusion.evaluation", "vlfusion.training")),
    ("vlfusion.models", ("vlfusion.evaluation", "vlfusion.training", "vlfusion.data")),
])
def test_layers_import_downward(graph, layer, forbidden):
  """Training and evaluation do not know each other (evaluation runs through a callback, evaluators are
  built from a predictor; `vlfusion.experiment` joins them); data and the tasks know neither (the
  model, losses and evaluators read the tasks); the models know no data."""
  graph, _ = graph
  upward = [
    f"{i}" for m, imps in graph.items() if m == layer or m.startswith(layer + ".")
    for i in imps if any(i.target == f or i.target.startswith(f + ".") for f in forbidden)
  ]
  assert not upward, f"{layer} imports {forbidden}:\n" + "\n".join(upward)
