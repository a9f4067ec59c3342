"""The layout rule of SPEC section 1 / docs/architecture.md, read from the source with ``ast``.

Every import counts, lazy ones (inside functions) included:

- arrows point one way: ``inference`` imports no other deepmine package; ``lenscrafter`` only
  ``inference``; ``training`` only ``inference`` and ``lenscrafter``; ``export`` any of them;
- no library module imports a command-line module (``deepmine.<package>.cli.*``): progress and
  logging reach the terminal through callbacks;
- no import cycles between deepmine modules;
- the app finds the commands through a table of module names, and every name in it exists.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"inference": "deepmine.inference", "lenscrafter": "deepmine.lenscrafter",
            "export": "deepmine.export", "training": "deepmine.training"}
#: package → the deepmine packages it may import (besides itself)
ALLOWED = {
    "inference": set(),
    "lenscrafter": {"inference"},
    "training": {"inference", "lenscrafter"},
    "export": {"inference", "lenscrafter", "training"},
}


def _modules() -> dict[str, Path]:
    mods = {}
    for folder, name in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            mods[".".join([name, *parts])] = path
    return mods


MODULES = _modules()


def _is_package(mod: str) -> bool:
    return MODULES[mod].name == "__init__.py"


def _resolve(mod: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.split(".") if _is_package(mod) else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(mod: str) -> list[tuple[str, int]]:
    """(imported deepmine module, line) for every import in ``mod``, lazy ones included."""
    tree = ast.parse(MODULES[mod].read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(mod, node)
            # `from pkg import sub` imports the sub-module; `from pkg import name` the package
            names = [f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target for a in node.names]
        else:
            continue
        for name in names:
            if not name.startswith("deepmine."):
                continue
            while name not in MODULES and "." in name:  # `import deepmine.x.y.attr` → module
                name = name.rsplit(".", 1)[0]
            if name in MODULES:
                found.append((name, node.lineno))
    return found


GRAPH = {mod: _imports(mod) for mod in MODULES}


def _package(mod: str) -> str:
    return mod.split(".")[1]


def _is_cli(mod: str) -> bool:
    return ".cli" in mod and mod.split(".")[2] == "cli"


def test_arrows_point_one_way():
    bad = [f"{MODULES[m].relative_to(ROOT)}:{line} imports {target}"
           for m, edges in GRAPH.items() for target, line in edges
           if _package(target) != _package(m) and _package(target) not in ALLOWED[_package(m)]]
    assert not bad, "imports against the layout rule:\n" + "\n".join(bad)


def test_no_library_module_imports_the_command_line():
    bad = [f"{MODULES[m].relative_to(ROOT)}:{line} imports {target}"
           for m, edges in GRAPH.items() if not _is_cli(m) for target, line in edges if _is_cli(target)]
    assert not bad, "library modules importing CLI modules:\n" + "\n".join(bad)


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), plus self-imports."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    graph = {m: sorted({t for t, _ in e if t != m or True}) for m, e in GRAPH.items()}

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert _cycles() == []


def test_the_graph_sees_lazy_imports_and_cycles(monkeypatch):
    """The checks are not vacuous: a lazy import and a planted cycle are found."""
    lazy = [t for t, _ in GRAPH["deepmine.inference.cli.app"]]
    assert "deepmine.inference.errors" in lazy
    monkeypatch.setitem(GRAPH, "deepmine.inference.errors", [*GRAPH["deepmine.inference.errors"],
                                                             ("deepmine.inference.cli.app", 1)])
    assert any("deepmine.inference.cli.app" in c for c in _cycles())


def test_the_app_finds_every_command_by_module_name():
    from deepmine.inference.cli.app import COMMANDS

    assert set(COMMANDS) == {"demo", "craft", "scan", "rank", "selection", "inspect", "train", "export",
                             "generate", "info", "bench"}
    for command, module in COMMANDS.items():
        assert module in MODULES, f"{command}: {module} does not exist"
        assert _is_cli(module), f"{command}: {module} is not in a cli/ folder"
    # each package owns its commands
    owner = {c: _package(m) for c, m in COMMANDS.items()}
    assert owner["train"] == "training" and owner["export"] == "export"
    assert {owner[c] for c in ("craft", "selection", "demo")} == {"lenscrafter"}


@pytest.mark.parametrize("limit", [500])
def test_no_god_modules(limit):
    """No module over ~500 lines (a few still are: they are listed, and the list only shrinks)."""
    known: set = set()  # every module is under the limit; the list only shrinks
    big = {str(p.relative_to(ROOT)) for p in MODULES.values() if len(p.read_text().splitlines()) > limit}
    assert big <= known, f"new modules over {limit} lines: {sorted(big - known)}"


def test_help_is_fast_and_imports_neither_torch_nor_numba_kernels():
    """`deepmine --help` resolves the command table but no heavy package (median of 3 runs)."""
    import subprocess
    import sys
    import time

    code = ("import sys; from deepmine.inference.cli.app import main; rc = main(['--help']); "
            "heavy = [m for m in ('torch', 'numba', 'deepmine.lenscrafter.kernels', 'onnxruntime') if m in sys.modules]; "
            "print('HEAVY', heavy)")
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        times.append(time.perf_counter() - t0)
    assert "HEAVY []" in out.stdout, out.stdout[-300:]
    assert "scan" in out.stdout and "train" in out.stdout
    assert sorted(times)[1] < 2.5, times  # 0.4 s on the idle 2-core dev box; a guard against heavy imports
