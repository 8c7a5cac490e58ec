"""The shape of the code, read from the source: arrows point inward, no cycles, short modules.

Layers, outermost first: service.cli > service.http > service.app > service.store | projections > events.
A layer may import any layer further in, never one further out; events imports nothing of ours.
service.config and service.metrics are leaves that the shell layers share; service.client is the SDK
that other services embed, so it imports nothing of ours.
"""

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("events", "projections", "service", "sql")
MAX_LINES = 300

_SHELL_LEAVES = {"service.config", "service.metrics"}
ALLOWED = {
    "events": set(),
    "projections": {"events"},
    "service.store": {"events", "service.metrics"},
    "service.app": {"events", "projections", "service.store"} | _SHELL_LEAVES,
    "service.http": {"events", "projections", "service.store", "service.app"} | _SHELL_LEAVES,
    "service.cli": {"events", "projections", "service.store", "service.app", "service.http"} | _SHELL_LEAVES,
    "service.config": set(),
    "service.metrics": set(),
    "service.client": set(),
    "service": set(),  # the package itself holds nothing
    "sql": set(),
}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def layer_of(module: str) -> str:
    matches = [layer for layer in ALLOWED if module == layer or module.startswith(layer + ".")]
    if not matches:
        raise AssertionError(f"{module} belongs to no layer: add it to ALLOWED in this test")
    return max(matches, key=len)


@functools.cache
def _imports(path: Path) -> tuple[tuple[int, str], ...]:
    return tuple(_read_imports(path))


def _read_imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for every import of ours in the file, also those inside functions."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from service.http import params` imports the module service.http.params
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [name if name in MODULES else node.module for name in names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES:
                yield node.lineno, name


def _own_imports(module: str) -> set[str]:
    return {name for _, name in _imports(MODULES[module]) if name in MODULES and name != module}


def test_every_module_belongs_to_a_layer():
    for module in MODULES:
        layer_of(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_inward(module):
    layer = layer_of(module)
    outward = [
        f"{MODULES[module].relative_to(ROOT)}:{line} imports {name} ({layer_of(name)})"
        for line, name in _imports(MODULES[module])
        if layer_of(name) != layer and layer_of(name) not in ALLOWED[layer]
    ]
    assert not outward, f"{layer} may import only {sorted(ALLOWED[layer])}:\n" + "\n".join(outward)


def test_nothing_but_the_cli_imports_the_http_shell():
    importers = {
        module
        for module in MODULES
        if layer_of(module) not in ("service.http", "service.cli")
        and any(layer_of(name) == "service.http" for name in _own_imports(module))
    }
    assert not importers


def test_no_import_cycle():
    graph = {module: _own_imports(module) for module in MODULES}
    # A package's __init__ importing its own submodules is how packages work, not a cycle.
    for module, targets in graph.items():
        graph[module] = {target for target in targets if not module.startswith(target + ".")}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycle = [*path[path.index(module) :], module]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        for target in sorted(graph[module]):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_no_module_outside_the_tests_is_over_300_lines():
    long = {
        str(path.relative_to(ROOT)): lines
        for path in sorted(ROOT.rglob("*.py"))
        if not path.relative_to(ROOT).parts[0].startswith((".", "tests"))
        and (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these modules (at most {MAX_LINES} lines each): {long}"


def test_the_checks_see_an_outward_import():
    """The rules are not vacuous: an import of the HTTP shell from the domain is found."""
    assert layer_of("events.account") == "events"
    assert "service.http" not in ALLOWED[layer_of("events.account")]
    assert layer_of("service.http.routes.keys") == "service.http"
    assert _own_imports("service.http.app") & {"service.http.routes", "service.http.errors"}
