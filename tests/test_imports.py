"""The import graph of the project's packages: no cycles (imports inside functions count), and torch stops at
one line: sami_rt never names torch, not even in a string, and imports nothing that does."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("sami_rt", "sami_reference", "train", "export")
TORCH_SIDE = ("torch", "sami_reference", "train", "export", "torchvision")


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = f.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    for name in extensions():  # compiled modules are leaves, built or not (a fresh clone has none yet)
        out[name] = None
    return out


def extensions() -> list[str]:
    """The compiled modules setup.py declares (``sami_rt.sampling._sampler``)."""
    return re.findall(r'Pybind11Extension\(\s*"([\w.]+)"', (ROOT / "setup.py").read_text())


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Project modules that ``name`` imports anywhere in its file (module level or inside functions)."""
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pkg import sub` imports the submodule pkg.sub; `from pkg import name` the package itself
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known and "." in t:
                t = t.rsplit(".", 1)[0]
            if t in known and t != name:
                out.add(t)
            elif t.split(".")[0] in TORCH_SIDE and t not in known:
                out.add(t.split(".")[0])
    return out


def graph():
    known = modules()
    return known, {m: imports_of(m, p, known) if p else set() for m, p in known.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in g:
                continue
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

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_the_checker_sees_a_cycle_and_a_function_level_import():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(g) == [["a", "b", "c"]]
    known, real = graph()
    # train/fid.py imports train.natural inside functions only: the graph must still hold that edge
    assert "train.natural" in real["train.fid"] and "sami_rt.contract.format" in real["sami_rt.contract.bundle"]


def test_no_import_cycles_between_the_projects_modules():
    known, g = graph()
    found = cycles(g)
    assert not found, f"import cycles: {found}"


def test_sami_rt_never_reaches_torch():
    known, g = graph()
    for m, deps in g.items():
        if m.split(".")[0] == "sami_rt":
            bad = sorted(d for d in deps if d.split(".")[0] in TORCH_SIDE)
            assert not bad, f"{m} imports {bad}"
    for f in sorted((ROOT / "sami_rt").rglob("*.py")):  # strings, comments and docstrings too
        text = f.read_text().lower()
        assert "torch" not in text, f"{f.relative_to(ROOT)} names torch (line {text[: text.index('torch')].count(chr(10)) + 1})"


def test_no_source_file_is_over_400_lines():
    """Issue 17's bound on a file's size, for every Python file the project writes (packages, scripts,
    benchmarks, examples, tests)."""
    long = {}
    for folder in (*PACKAGES, "benchmarks", "examples", "tests"):
        for f in (ROOT / folder).rglob("*.py"):
            n = len(f.read_text().splitlines())
            if n > 400:
                long[str(f.relative_to(ROOT))] = n
    assert long == {}, long


def test_sami_rt_is_grouped_by_seam():
    """Issue 32: the top of sami_rt holds the facade, the package's __init__, the version and the errors;
    everything else sits in a sub-package; the compiled loop is found by the graph whether built or not."""
    top = sorted(f.name for f in (ROOT / "sami_rt").glob("*.py"))
    assert top == ["__init__.py", "_version.py", "errors.py", "runtime.py"], top
    assert extensions() == ["sami_rt.sampling._sampler"]
    known, g = graph()
    assert "sami_rt.sampling._sampler" in g["sami_rt.sampling.loop"]  # not mistaken for the package itself
