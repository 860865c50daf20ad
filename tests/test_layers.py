"""The layout stays true: imports run one way between the five parts, with no cycles.

    jobs  ->  pipelines | train | serve  ->  platform

`pipelines`, `train` and `serve` never import each other, `platform` imports none of
them, nothing imports `jobs`. Every import counts, including those inside functions and
under `TYPE_CHECKING`: a lazy import is still an arrow. The graph is read from the source
with `ast`, so the check needs nothing installed and cannot be fooled by import order.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lmforge"
PARTS = ("jobs", "pipelines", "train", "serve", "platform")
ALLOWED = {
    "jobs": {"jobs", "pipelines", "train", "serve", "platform"},
    "pipelines": {"pipelines", "platform"},
    "train": {"train", "platform"},
    "serve": {"serve", "platform"},
    "platform": {"platform"},
}
MAX_LINES = 450


def module_name(path: Path, root: Path = PACKAGE) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The lmforge modules that `path` (module `name`) imports, anywhere in the file."""
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package that holds this module
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, base] if base else pkg)
            # `from pkg import mod` imports the submodule when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]  # fmt: skip
        for t in targets:
            if t.split(".")[0] != "lmforge":
                continue
            while t and t not in known:  # `import lmforge.a.b.func` -> the module part
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    mods = modules(root)
    return {m: imports_of(p, m, set(mods)) for m, p in mods.items()}


def part_of(module: str) -> str | None:
    bits = module.split(".")
    return bits[1] if len(bits) > 1 and bits[1] in PARTS else None


def arrows_against_direction(g: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, dsts in sorted(g.items()):
        for dst in sorted(dsts):
            a, b = part_of(src), part_of(dst)
            if a is None or b is None:
                bad.append(f"{src} -> {dst}: outside the five parts")
            elif b not in ALLOWED[a]:
                bad.append(f"{src} -> {dst}: {a} may not import {b}")
    return bad


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
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


def test_imports_run_one_way_between_the_parts() -> None:
    g = graph()
    assert {part_of(m) for m in g} - {None} == set(PARTS), "a part is missing"
    # only the package itself sits outside the parts
    assert [m for m in g if part_of(m) is None] == ["lmforge"]
    assert arrows_against_direction(g) == []


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_files_hold_one_idea_each() -> None:
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}  # fmt: skip
    assert long == {}


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        # the check itself: each rule catches the arrow it names
        ({"platform/config.py": "from lmforge.pipelines.synthetic import X\n"}, "platform may"),
        ({"serve/app.py": "def f():\n    from lmforge.train import loop\n"}, "serve may not"),
        ({"pipelines/a.py": "from ..jobs import cli\n"}, "pipelines may not import jobs"),
        ({"cli.py": "import lmforge.jobs.cli\n"}, "outside the five parts"),
    ],
)
def test_the_check_catches_wrong_arrows(
    tmp_path: Path, files: dict[str, str], expected: str
) -> None:
    root = tmp_path / "lmforge"
    for part in PARTS:
        (root / part).mkdir(parents=True)
        (root / part / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    for name, text in {"jobs/cli.py": "", "train/loop.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "pipelines" / "synthetic.py").write_text("X = 1\n")
    bad = arrows_against_direction(graph(root))
    assert any(expected in b for b in bad), bad


def test_the_check_finds_a_cycle(tmp_path: Path) -> None:
    root = tmp_path / "lmforge"
    (root / "jobs").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "jobs" / "__init__.py").write_text("")
    (root / "jobs" / "a.py").write_text("from lmforge.jobs import b\n")
    (root / "jobs" / "b.py").write_text("def f():\n    import lmforge.jobs.a\n")
    assert cycles(graph(root)) == [["lmforge.jobs.a", "lmforge.jobs.b"]]
