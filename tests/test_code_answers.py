"""Code answers under the truncation filter: complete code (real functions of installed
packages, C / JavaScript / SQL / shell snippets, bare or fenced) is kept, and the same code
cut at random points (seeded) is caught as code, never as a prose `mid_sentence`."""

from __future__ import annotations

import inspect
import json
import random
import shutil
import string
import textwrap
from collections import Counter

import pytest

from lmforge.pipelines.synthetic import TruncationFilter, default_filters, first_failure
from lmforge.pipelines.synthetic.code import code_cut, code_tail, family

C = """#include <stdio.h>

int main(void) {
    int n = 10, a = 0, b = 1;
    for (int i = 0; i < n; i++) {
        printf("%d ", a);
        int t = a + b;
        a = b;
        b = t;
    }
    printf("\\n");
    return 0;}"""
JS = """function isPalindrome(str) {
  const clean = str.toLowerCase().replace(/[^a-z0-9]/g, '');
  return clean === clean.split('').reverse().join('');
}

console.log(isPalindrome('racecar'));"""
SQL = """SELECT c.name, COUNT(o.id) AS orders
FROM customers c
LEFT JOIN orders o ON o.customer_id = c.id
WHERE o.created_at >= '2023-01-01'
GROUP BY c.name
ORDER BY orders DESC;"""
SHELL = """#!/bin/bash
for f in *.log; do
  if [ -s "$f" ]; then
    gzip "$f"
  fi
done
echo "compressed all non-empty logs\""""
SNIPPETS = {"c": C, "js": JS, "sql": SQL, "shell": SHELL}
FUNCTIONS = [json.dumps, textwrap.dedent, shutil.copyfile, string.capwords, Counter.most_common]


def python_sources() -> list[str]:
    return [textwrap.dedent(inspect.getsource(f)) for f in FUNCTIONS]


def conv(answer: str, question: str = "Write the code.") -> list[dict[str, str]]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


@pytest.mark.parametrize("name", SNIPPETS)
def test_complete_snippets_are_code_and_kept(name: str) -> None:
    code = SNIPPETS[name]
    assert code_tail(code) is not None
    assert family(code) == {"js": "c"}.get(name, name)
    f = TruncationFilter()
    assert f.kind(code) is None
    assert f.kind(f"Here is the program:\n\n```\n{code}\n```") is None
    assert f.kind(f"Here is the program:\n\n{code}") is None  # bare, after a prose line


def test_complete_python_functions_are_kept_by_every_filter() -> None:
    filters = default_filters()
    for src in python_sources():
        doc = src.split('"""')[1].strip().split("\n")[0] if '"""' in src else "does this"
        q = f"Write a Python function that {doc[0].lower()}{doc[1:]}"
        assert code_tail(src) is not None and family(src) == "python"
        assert first_failure(conv(src, q), filters) is None, src[:60]


def test_code_cut_kinds() -> None:
    assert code_cut('int main(void) {\n    printf("hi");') == "code_brackets"
    assert code_cut('const s = "unterminated\nlet x = 1;') is None  # one-line strings end
    assert code_cut('console.log("a");\nconst msg = "cut her') == "code_string"
    assert code_cut("const x = 1;\nconst y = x +") == "code_statement"
    assert code_cut("SELECT name\nFROM users\nWHERE") == "code_statement"
    assert code_cut("for f in *; do\n  echo $f") == "code_statement"  # no `done`
    assert code_cut("cat file.txt |") == "code_statement"
    assert code_cut("def f(x):\n    if x:") == "code_statement"
    assert code_cut('def f(x):\n    """Return x') == "code_string"
    assert code_cut("def f(x):\n    return g(x,") == "code_brackets"
    case = 'case "$1" in\n  start) run ;;\n  *) usage ;;\nesac'
    assert code_cut(case) is None  # a pattern's `)` opens nothing


def test_prose_answers_are_not_code() -> None:
    prose = "I love the sea. Every morning I walk along the shore and watch the boats"
    assert code_tail(prose) is None
    assert TruncationFilter().kind(prose) == "mid_sentence"


def test_random_cuts_are_caught_as_code() -> None:
    """Each source cut at 40 seeded random points: most cuts are caught, every caught one
    as code (a cut at a line end or inside a name, `return sor`, can leave valid code)."""
    f = TruncationFilter()
    rng = random.Random(12)
    kinds: Counter[str | None] = Counter()
    for src in [*SNIPPETS.values(), *python_sources()]:
        for _ in range(40):
            cut = src[: rng.randint(len(src) // 5, len(src) - 2)].rstrip()
            kinds[f.kind(cut)] += 1
    total = sum(kinds.values())
    assert kinds["mid_sentence"] + kinds["token_limit"] <= 0.03 * total, kinds
    assert 1 - kinds[None] / total >= 0.7, kinds
