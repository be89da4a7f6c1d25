"""The import layers of docs/ARCHITECTURE.md: the library never imports data_prep, launch or
tools; data_prep never imports launch or tools; a launcher imports no other launcher except
launch.common."""

import ast
from pathlib import Path

from tests.conftest import REPO


def imported_modules(path: Path) -> set[str]:
  tree = ast.parse(path.read_text(), filename=str(path))
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      out.add(node.module)
      out.update(f"{node.module}.{a.name}" for a in node.names)
  return out


def top(name: str) -> str:
  return name.split(".")[0]


def test_library_imports_no_upper_layer():
  bad = [(str(p.relative_to(REPO)), m) for p in (REPO / "neuript_jax").rglob("*.py")
         for m in imported_modules(p) if top(m) in ("data_prep", "launch", "tools")]
  assert not bad, bad


def test_data_prep_imports_no_launcher_or_tool():
  bad = [(str(p.relative_to(REPO)), m) for p in (REPO / "data_prep").rglob("*.py")
         for m in imported_modules(p) if top(m) in ("launch", "tools")]
  assert not bad, bad


def test_launchers_import_only_launch_common():
  bad = []
  for p in (REPO / "launch").glob("*.py"):
    for m in imported_modules(p):
      if top(m) == "launch" and m not in ("launch", "launch.common"):
        bad.append((p.name, m))
      if top(m) == "tools":
        bad.append((p.name, m))
  assert not bad, bad
