"""Code-instruction records for synthetic_filter_eval.py: a stand-in, made at run time.

There is no code-instruction data set in ../shared/data, so the records are built from real
code: functions of the installed Python standard library (`inspect.getsource`), each the
answer to "Write a Python function that <its docstring's first line>", and hand-written
C, C++, Java, JavaScript, SQL and shell programs answering the instruction above them.
Most answers are bare code (the usual shape of code-instruction sets); every fourth
Python answer is fenced after a sentence. None is changed: every drop is a false drop.

`cut_records` cuts the same answers at seeded random points (a truncation planted in code).
"""

from __future__ import annotations

import importlib
import inspect
import random
import textwrap
from typing import Any

MODULES = (
    "json", "textwrap", "shutil", "string", "collections", "argparse", "difflib", "csv",
    "calendar", "fractions", "statistics", "heapq", "bisect", "base64", "ipaddress",
    "urllib.parse", "posixpath", "fnmatch", "glob", "gettext", "html", "pprint", "random",
    "shlex", "tempfile", "zipfile", "tarfile", "email.utils", "http.cookies", "configparser",
)  # fmt: skip

SNIPPETS: list[tuple[str, str]] = [
    (
        "Write a C program that prints the first ten Fibonacci numbers.",
        """#include <stdio.h>

int main(void) {
    int a = 0, b = 1;
    for (int i = 0; i < 10; i++) {
        printf("%d ", a);
        int t = a + b;
        a = b;
        b = t;
    }
    printf("\\n");
    return 0;
}""",
    ),
    (
        "Write a C function that reverses a string in place.",
        """#include <string.h>

void reverse(char *s) {
    size_t n = strlen(s);
    for (size_t i = 0; i < n / 2; i++) {
        char t = s[i];
        s[i] = s[n - 1 - i];
        s[n - 1 - i] = t;
    }
}""",
    ),
    (
        "Write a C++ function that counts the words in a string.",
        """#include <sstream>
#include <string>

int countWords(const std::string& text) {
    std::istringstream in(text);
    std::string word;
    int n = 0;
    while (in >> word) {
        ++n;
    }
    return n;
}""",
    ),
    (
        "Write a Java method that checks whether a number is prime.",
        """public static boolean isPrime(int n) {
    if (n < 2) {
        return false;
    }
    for (int i = 2; (long) i * i <= n; i++) {
        if (n % i == 0) {
            return false;
        }
    }
    return true;
}""",
    ),
    (
        "Write a JavaScript function that checks whether a string is a palindrome.",
        """function isPalindrome(str) {
  const clean = str.toLowerCase().replace(/[^a-z0-9]/g, '');
  return clean === clean.split('').reverse().join('');
}

console.log(isPalindrome('racecar'));""",
    ),
    (
        "Write a JavaScript function that debounces another function.",
        """const debounce = (fn, wait = 300) => {
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn.apply(this, args), wait);
  };
};

window.addEventListener('resize', debounce(() => console.log(`width: ${window.innerWidth}`)));""",
    ),
    (
        "Write a JavaScript function that fetches JSON from a URL and returns the titles.",
        """async function fetchTitles(url) {
  const response = await fetch(url);
  if (!response.ok) {
    throw new Error(`HTTP ${response.status}`);
  }
  const items = await response.json();
  return items.map((item) => item.title);
}""",
    ),
    (
        "Write a SQL query that lists each customer with their number of orders in 2023.",
        """SELECT c.name, COUNT(o.id) AS orders
FROM customers c
LEFT JOIN orders o ON o.customer_id = c.id
WHERE o.created_at >= '2023-01-01' AND o.created_at < '2024-01-01'
GROUP BY c.name
ORDER BY orders DESC;""",
    ),
    (
        "Write SQL that creates a table of employees and inserts two rows.",
        """CREATE TABLE employees (
    id INTEGER PRIMARY KEY,
    name VARCHAR(100) NOT NULL,
    salary DECIMAL(10, 2)
);

INSERT INTO employees (id, name, salary) VALUES (1, 'Ada', 5200.00);
INSERT INTO employees (id, name, salary) VALUES (2, 'Linus', 4800.50);""",
    ),
    (
        "Write a SQL query that finds the second highest salary.",
        """SELECT MAX(salary) AS second_highest
FROM employees
WHERE salary < (SELECT MAX(salary) FROM employees);""",
    ),
    (
        "Write a bash script that compresses every non-empty log file in a folder.",
        """#!/bin/bash
for f in *.log; do
  if [ -s "$f" ]; then
    gzip "$f"
  fi
done
echo "compressed all non-empty logs\"""",
    ),
    (
        "Write a shell script that backs up a directory with a dated name.",
        """#!/bin/sh
set -e
src="${1:-$HOME/documents}"
dest="/backup/$(basename "$src")-$(date +%Y-%m-%d).tar.gz"
tar -czf "$dest" -C "$(dirname "$src")" "$(basename "$src")"
echo "backup written to $dest\"""",
    ),
    (
        "Write a bash script that starts, stops or restarts a service given as argument.",
        """#!/bin/bash
case "$1" in
  start) systemctl start myapp ;;
  stop) systemctl stop myapp ;;
  restart) systemctl restart myapp ;;
  *) echo "usage: $0 {start|stop|restart}"; exit 1 ;;
esac""",
    ),
]


def python_functions(limit: int = 400) -> list[tuple[str, str]]:
    """(instruction, source) for documented functions of `MODULES`, 200-2500 characters."""
    out, seen = [], set()
    for name in MODULES:
        module = importlib.import_module(name)
        for _, fn in inspect.getmembers(module, inspect.isfunction):
            doc = (inspect.getdoc(fn) or "").strip().split("\n")[0].rstrip(".")
            if fn.__module__ != module.__name__ or len(doc.split()) < 3 or doc in seen:
                continue
            try:
                src = textwrap.dedent(inspect.getsource(fn)).strip()
            except (OSError, TypeError):
                continue
            if 200 <= len(src) <= 2500:
                seen.add(doc)
                out.append((f"Write a Python function that does this: {doc}.", src))
    return out[:limit]


def records() -> list[dict[str, Any]]:
    """Untouched Alpaca records: {id, language, instruction, input, response}."""
    out = []
    for i, (instruction, src) in enumerate(python_functions()):
        answer = f"Here is the function:\n\n```python\n{src}\n```" if i % 4 == 3 else src
        out.append({"id": f"code-py-{i:04d}", "language": "python",
                    "instruction": instruction, "input": "", "response": answer})  # fmt: skip
    for i, (instruction, src) in enumerate(SNIPPETS):
        names = ("C++", "C", "Java", "JavaScript", "SQL", "bash", "shell")
        lang = next(n for n in names if f" {n} " in f" {instruction} ").lower()
        out.append({"id": f"code-{i:02d}", "language": lang,
                    "instruction": instruction, "input": "", "response": src})  # fmt: skip
    return out


def cut_records(recs: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """The bare-code answers cut at a random point past their first fifth (one each)."""
    rng = random.Random(seed)
    out = []
    for r in recs:
        src = r["response"]
        if src.startswith("Here is"):
            continue
        cut = src[: rng.randint(len(src) // 5, len(src) - 2)].rstrip()
        out.append(dict(r, id=r["id"] + "-cut", response=cut))
    return out


def report(
    untouched: list[dict[str, Any]],
    cuts: list[dict[str, Any]],
    fates: dict[str, str | None],
    show: int,
) -> float:
    """Print false drops of the untouched code records (by language and reason) and the
    share of cut ones caught as truncated; returns the false-drop rate."""
    from collections import Counter

    drops = Counter(fates[r["id"]] for r in untouched if fates[r["id"]] is not None)
    by_lang = Counter(r["language"] for r in untouched)
    rate = sum(drops.values()) / len(untouched)
    caught = Counter(fates[r["id"]] for r in cuts)
    n_trunc = sum(n for k, n in caught.items() if (k or "").startswith("synthetic_filter/trunc"))
    print(
        f"\nCODE-INSTRUCTION STAND-IN (real code, not a data set: {len(untouched)} records, "
        f"{dict(by_lang)}): untouched dropped {sum(drops.values())} ({rate:.2%}): {dict(drops)}"
    )
    for r in [r for r in untouched if fates[r["id"]] is not None][:show]:
        print(f"   code false drop {r['id']} ({fates[r['id']]}): {r['response'][-120:]!r}")
    print(
        f"code cut at a random point: {len(cuts)}, caught as truncated {n_trunc} "
        f"({n_trunc / max(1, len(cuts)):.1%}; no goal: a cut at a line end or inside a name "
        f"can leave valid code): {dict(caught)}"
    )
    return rate
