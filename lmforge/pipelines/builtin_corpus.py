"""A raw corpus that needs no download: the docstrings of the installed Python code.

Every machine that runs lmforge has Python's standard library and site-packages, and
their docstrings are real English prose about real software. The corpus is written
as JSONL with stable ids (`pydoc:<module>:<qualified name>`), in sorted file order, so
two machines with the same Python build the same corpus.
"""

from __future__ import annotations

import ast
import json
import sysconfig
from collections.abc import Iterator
from pathlib import Path

SKIP_PARTS = {"test", "tests", "idlelib", "lib2to3", "__pycache__", "site-packages"}


def _roots() -> list[tuple[str, Path]]:
    paths = sysconfig.get_paths()
    return [("stdlib", Path(paths["stdlib"])), ("site-packages", Path(paths["purelib"]))]


def iter_docstrings(max_docs: int) -> Iterator[dict[str, str]]:
    """Up to max_docs records {id, text, source}: module, class and function docstrings."""
    n = 0
    seen: set[str] = set()
    for source, root in _roots():
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root)
            if SKIP_PARTS & set(rel.parts[:-1]):
                continue
            module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
            for qualname, doc in _docstrings(path):
                rid = f"pydoc:{module}:{qualname}"
                while rid in seen:  # a name defined twice (e.g. per platform)
                    rid += "'"
                seen.add(rid)
                yield {"id": rid, "text": doc, "source": source}
                n += 1
                if n >= max_docs:
                    return


def _docstrings(path: Path) -> Iterator[tuple[str, str]]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return
    stack: list[tuple[str, ast.AST]] = [("", tree)]
    while stack:
        prefix, node = stack.pop(0)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield prefix or "<module>", doc
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}.{child.name}" if prefix else child.name
                stack.append((name, child))


def builtin_bytes(name: str, max_docs: int) -> tuple[str, bytes]:
    """(file name, JSONL bytes) of a built-in input: `python-docs` (the docstring corpus)
    or `synthetic-examples` (the instruction records shipped in the package)."""
    if name == "python-docs":
        lines = (json.dumps(r, ensure_ascii=False) for r in iter_docstrings(max_docs))
        return "python-docs.jsonl", ("\n".join(lines) + "\n").encode("utf-8")
    if name == "synthetic-examples":
        from importlib.resources import files

        data = files("lmforge").joinpath("data", "synthetic_examples.jsonl").read_bytes()
        return "synthetic_examples.jsonl", data
    raise ValueError(f"unknown built-in input 'builtin:{name}' (python-docs, synthetic-examples)")
