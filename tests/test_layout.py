"""The package's layout, read from the source: imports only go down.

The import graph is built with :mod:`ast` from every module of the installed
package (``gpu_bytepiece/``, plus ``cpu_fallback/`` and ``kernels/``, which
install as ``gpu_bytepiece.cpu_fallback`` and ``gpu_bytepiece.kernels``),
function-local imports included, ``if TYPE_CHECKING:`` blocks excluded.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = "gpu_bytepiece"
#: source folder -> the package name it installs as
ROOTS = {ROOT / "gpu_bytepiece": PKG, ROOT / "cpu_fallback": f"{PKG}.cpu_fallback",
         ROOT / "kernels": f"{PKG}.kernels"}
#: the layers below the tokenizer, the trainer and the pipeline
LOWER = ("config", "checks", "device", "files", "model", "trie", "text", "core", "backends", "cpu_fallback", "kernels",
         "_gc", "jit_cache", "aot", "ray_cluster", "progress")
UPPER = ("tokenizer", "train", "pipeline", "cli", "hf", "ray")
#: a file longer than this must say in its docstring why it is one file
MAX_LINES = 500


def _modules() -> dict:
    """``{module name: (path, is_package)}`` for every source file."""
    mods = {}
    for folder, name in ROOTS.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("")
            parts = list(rel.parts)
            is_pkg = parts[-1] == "__init__"
            if is_pkg:
                parts = parts[:-1]
            mods[".".join([name, *parts])] = (path, is_pkg)
    return mods


MODULES = _modules()


def _is_type_checking(node) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id.endswith("TYPE_CHECKING")) or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(mod: str) -> set:
    """Every module ``mod`` imports (full dotted names), anywhere in the file."""
    path, is_pkg = MODULES[mod]
    tree = ast.parse(path.read_text(), str(path))
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    out = set()

    def visit(node):
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                target = ".".join(base[:len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module
            subs = {f"{target}.{a.name}" for a in node.names} & MODULES.keys()
            # `from . import lattice` imports the module lattice; `from .x import f` imports x
            out.update(subs if len(subs) == len(node.names) else subs | {target})
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    out.discard("__future__")
    return out


GRAPH = {m: _imports(m) for m in MODULES}


def _internal(names) -> set:
    return {n for n in names if n in MODULES}


def _layer(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_graph_sees_the_package():
    assert f"{PKG}.tokenizer" in MODULES and f"{PKG}.core.lattice" in MODULES
    assert f"{PKG}.core.lattice" in GRAPH[f"{PKG}.cpu_fallback.tokenize"]


def test_no_import_cycle():
    # Tarjan's strongly connected components over internal edges
    edges = {m: sorted(_internal(GRAPH[m])) for m in MODULES}
    index, low, stack, on, cycles = {}, {}, [], set(), []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))

    def strong(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                strong(w)
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
            if len(comp) > 1 or v in edges[v]:
                cycles.append(sorted(comp))

    for m in sorted(edges):
        if m not in index:
            strong(m)
    assert cycles == [], "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("mod", sorted(m for m in MODULES if _layer(m) == "core"))
def test_core_imports_only_numpy_numba_math(mod):
    bad = {n for n in GRAPH[mod]
           if n.split(".")[0] not in ("numpy", "numba", "math") and not n.startswith(f"{PKG}.core")}
    assert bad == set(), f"{mod} imports {sorted(bad)}"


@pytest.mark.parametrize("mod", sorted(m for m in MODULES if _layer(m) in ("cpu_fallback", "kernels")))
def test_drivers_import_only_core_and_config(mod):
    # (and jit_cache: where their cache=True code is cached)
    own = ".".join(mod.split(".")[:2])
    allowed = (f"{PKG}.core", f"{PKG}.config", f"{PKG}.jit_cache", own)
    bad = {n for n in GRAPH[mod]
           if n.split(".")[0] not in ("numpy", "numba", "math")
           and not any(n == a or n.startswith(a + ".") for a in allowed)}
    assert bad == set(), f"{mod} imports {sorted(bad)}"


@pytest.mark.parametrize("mod", sorted(m for m in MODULES if _layer(m) in LOWER))
def test_lower_layers_do_not_import_the_orchestrators(mod):
    up = {n for n in _internal(GRAPH[mod]) if _layer(n) in UPPER}
    assert up == set(), f"{mod} reaches up to {sorted(up)}"


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_long_files_say_why_they_are_one_file(mod):
    path, _ = MODULES[mod]
    n = len(path.read_text().splitlines())
    if n <= MAX_LINES:
        return
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert "One file:" in doc, f"{path.relative_to(ROOT)} has {n} lines; split it or say why (\"One file: ...\")"


def test_one_device_parser():
    # the device strings 'auto'/'cuda:N' are parsed in gpu_bytepiece/device.py only
    parsers = [str(p.relative_to(ROOT)) for p, _ in MODULES.values()
               if '"cuda:"' in p.read_text() and p.name != "device.py"]
    assert parsers == []


def test_one_splitmix():
    # splitmix64's multipliers are written in core/rng.py only
    places = [str(p.relative_to(ROOT)) for p, _ in MODULES.values()
              if "0xBF58476D1CE4E5B9" in p.read_text().upper().replace("0XBF", "0xBF")]
    assert places == ["gpu_bytepiece/core/rng.py"]
