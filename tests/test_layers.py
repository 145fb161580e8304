"""The house rule: gw502d's subpackages import downward only, in the order the data flows.

source (files and the journal -> lines) < parse (line shapes) < classify (catalog, matcher,
tally) < remediate (the fix, root causes, this host's config) < export (metrics, HTTP,
page) < scan (offline) < daemon (run) < cli. A lower layer that needs a type from a higher
one means the type lives in the wrong place.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "gw502d"
ORDER = ["__init__", "errors", "source", "parse", "classify", "remediate", "export", "scan",
         "daemon", "cli", "__main__"]


def layer(module: Path) -> str:
    parts = module.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def imported_layers(module: Path) -> set[str]:
    tree = ast.parse(module.read_text(), str(module))
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "gw502d":
                found.add(parts[1] if len(parts) > 1 else "__init__")
    return found


def test_every_module_is_in_a_declared_layer() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert modules
    assert {layer(m) for m in modules} <= set(ORDER)


def test_imports_only_go_down() -> None:
    upward = []
    for module in sorted(PACKAGE.rglob("*.py")):
        own = ORDER.index(layer(module))
        for target in imported_layers(module):
            if ORDER.index(target) > own:
                upward.append(f"{module.relative_to(PACKAGE)} imports gw502d.{target}")
    assert upward == []


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """Not vacuous: an import of the daemon, however written, is found."""
    module = tmp_path / "m.py"
    module.write_text("import gw502d.daemon.service\nfrom gw502d.export import http\n"
                      "def f():\n    from gw502d.cli import main\n")
    assert imported_layers(module) == {"daemon", "export", "cli"}
