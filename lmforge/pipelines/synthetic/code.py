"""Code answers: find the code an answer ends in (fenced or bare) and judge its end as code.

A code-instruction answer is often plain code without Markdown fences; its last line
(`return 0;}`, `console.log(f('racecar'));`) is no prose sentence, so the prose rules of
`shape.TruncationFilter` must not read it. `code_tail` finds the trailing code block;
`code_cut` says whether that code stops before it is done:

    code_brackets   a `(`, `[` or `{` left open (outside strings and comments)
    code_string     a string literal still open where the text ends
    code_statement  a statement cut mid-way: a last line ending in an operator, a comma,
                    a Python `:` with no body, a shell `|`/`&&`/`\\`, a SQL keyword; a shell
                    `if`/`do`/`case` without its `fi`/`done`/`esac`; a C-family last line
                    without `;`, `}` or `)`

Python is judged by the interpreter's own parser (`compile`): its "was never closed",
"unterminated string" and "expected an indented block" are truncation; other syntax errors
(a `>>>` session, a placeholder) fall back to the generic scan. A cut at a line boundary or
mid-identifier (`return sor`) can leave valid code: no rule can see that, and none tries.
"""

from __future__ import annotations

import re
import textwrap
import warnings

# A line that reads as code in one of the families: a keyword shape, a statement end, an
# assignment, a call, a comment marker. Prose lines rarely match (they start capitalized,
# end in a period and carry none of these shapes).
_CODE_LINE = re.compile(
    r"""^\s*(?:def\s+\w+\s*\(|class\s+\w+|import\s+[\w.]+|from\s+[\w.]+\s+import\b
      |(?:if|elif|while|for|with|except|try|else|finally)\b.*:\s*$|return\b|raise\b|yield\b
      |print\(|(?:async\s+)?function\b|(?:const|let|var)\s+\w+|export\s|module\.exports
      |console\.|document\.|\#include|\#define|\#!|(?:public|private|protected|static)\s
      |(?:int|void|char|float|double|long|unsigned|bool|auto|struct|enum)\s+\**\w+
      |package\s|using\s|namespace\s|template\s*<|std::
      |(?:SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|DROP|FROM|WHERE|JOIN|LEFT|RIGHT|INNER
         |GROUP\s+BY|ORDER\s+BY|HAVING|LIMIT|VALUES|SET|UNION|AND|OR|ON)\b(?!\s+[a-z]+\s+[a-z]+\s+[a-z])
      |(?:echo|sudo|apt(?:-get)?|cd|ls|mkdir|chmod|grep|cat|source|npm|pip3?|git|curl|wget
         |docker|python3?|fi|done|then|do|esac|case)\b(?:\s|$)|\$\s|//|/\*|\*/|--\s|\#\s
      |[}\])]|\w+(?:\.\w+)*\s*\(.*\)\s*;?\s*$)
    |[;{}]\s*$|;\s*(?:do|then)\s*$|^\s*(?:if|elif|while|until)\s+\[|\s(?:=>|->|==|!=|&&|\|\||:=|\+=|-=)\s
    |^\s*[\w.\[\]'"]+\s*=\s*\S""",
    re.VERBOSE,
)
# A first line that opens a program: the whole answer is code (its docstrings included)
_OPENER = re.compile(
    r"^(?:@\w[\w.]*(?:\(.*\))?$|def\s+\w+\s*\(|class\s+\w+.*:\s*$|import\s+\w|from\s+[\w.]+\s+import\s|#include\b"
    r"|#!/|(?:async\s+)?function\s+\w+\s*\(|(?:const|let|var)\s+\w+\s*=|package\s+\w"
    r"|using\s+\w|(?:public|private)\s+(?:static\s+)?\w|(?:SELECT|INSERT|CREATE|UPDATE|WITH)\s)"
)
_PY_OPENER = re.compile(r"@\w|def \w+\s*\(|class \w+.*:\s*$|import \w|from [\w.]+ import ", re.M)
_PY = re.compile(r"^\s*(?:def |class |import |from \S+ import |elif |print\()|:\s*$", re.M)
_SH = re.compile(r"^\s*(?:#!.*sh|\$ |fi$|done$|esac$|then$|echo |sudo |export )|\$\{?\w", re.M)
_SQL = re.compile(r"^\s*(?:SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|WITH|DROP)\b", re.M)
_C = re.compile(r"[;{}]\s*$|^\s*#include|\bfunction\b|=>|\bconst |\blet ", re.M)
_SQL_DANGLING = re.compile(
    r"\b(?:SELECT|FROM|WHERE|AND|OR|JOIN|ON|BY|AS|SET|VALUES|INTO|IN|NOT|LIKE|BETWEEN"
    r"|HAVING|CASE|WHEN|THEN|ELSE|UNION|LIMIT)$|[=<>,(+\-*/.]$",
    re.IGNORECASE,
)
_OPERATOR_END = re.compile(r"(?:[=+\-*/%&|^<>,.\\(\[{]|&&|\|\||=>|->|::|\band|\bor|\bnot)$")
_SH_OPEN = {"if": "fi", "case": "esac", "do": "done"}
_PY_CUT = (
    ("was never closed", "code_brackets"),
    ("unterminated", "code_string"),
    ("expected an indented block", "code_statement"),
    ("unexpected EOF", "code_statement"),
    ("incomplete input", "code_statement"),
)


def is_code_line(line: str) -> bool:
    return bool(line.strip()) and _CODE_LINE.search(line) is not None


def code_tail(text: str) -> str | None:
    """The bare code block the answer ends in (lines from the last prose paragraph on),
    or None when the answer ends in prose or in a closed fence (an unclosed one is
    `truncated/code_fence` before this is asked). A block counts as code when at least half
    of its non-blank lines, and at least two, read as code, or every line is indented."""
    if re.match(r"\s*(?:```|~~~)", text.rstrip().rsplit("\n", 1)[-1]):
        return None  # a closed fence: the generation went on past the code
    first = text.lstrip().split("\n", 1)[0]
    if _OPENER.match(first):
        return text.strip("\n")
    paragraphs = re.split(r"\n\s*\n", text.rstrip())
    block: list[str] = []
    for para in reversed(paragraphs):
        lines = [x for x in para.splitlines() if x.strip()]
        code = sum(map(is_code_line, lines))
        indented = all(x[:1] in " \t" for x in lines)
        if (code and code * 2 >= len(lines)) or (indented and block):
            block.insert(0, para)
            continue
        if code and (block or is_code_line(lines[-1])):
            # prose lines above code in one paragraph ("Here it is:\nint main() {...")
            start = len(lines)
            while start > 0 and (is_code_line(lines[start - 1]) or lines[start - 1][:1] in " \t"):
                start -= 1
            if start < len(lines):
                block.insert(0, "\n".join(lines[start:]))
        break
    joined = "\n\n".join(block)
    return joined if sum(map(is_code_line, joined.splitlines())) >= 2 else None


def family(code: str) -> str:
    """ "python", "shell", "sql" or "c" (C, C++, Java, JavaScript, Go, ...)."""
    if _PY_OPENER.match(code.lstrip()):
        return "python"
    scores = {
        "python": len(_PY.findall(code)),
        "shell": len(_SH.findall(code)),
        "sql": 2 * len(_SQL.findall(code)),
        "c": len(_C.findall(code)),
    }
    return max(scores, key=lambda k: scores[k])


def code_cut(code: str) -> str | None:
    """The kind of cut (`code_brackets`, `code_string`, `code_statement`) or None when the
    code ends where code may end."""
    fam = family(code)
    kind = _python_cut(code)
    if kind == "":  # it parses as Python: complete, whatever it looked like
        return None
    if fam == "python" and kind is not None:
        return kind
    depth, open_string = _scan(code, fam)
    if open_string:
        return "code_string"
    if depth:
        return "code_brackets"
    lines = [_strip_comment(x, fam) for x in code.splitlines()]
    lines = [x for x in lines if x.strip()]
    if not lines:
        return None
    last = lines[-1].strip()
    if fam == "sql":  # a statement without `;` where the others have one
        ends = any(x.rstrip().endswith(";") for x in lines[:-1])
        cut = _SQL_DANGLING.search(last) or (ends and not last.endswith(";"))
        return "code_statement" if cut else None
    if fam == "shell":
        return "code_statement" if _shell_open(lines) or last.endswith(("|", "&&", "\\")) else None
    if _OPERATOR_END.search(last) and not last.endswith(("++", "--")):
        return "code_statement"
    if fam == "python":
        return "code_statement" if last.endswith(":") else None
    if not last.endswith((";", "}", ")", "]", ">", "*/")) and not last.startswith("#"):
        return "code_statement"
    return None


def _python_cut(code: str) -> str | None:
    """The parser's verdict: a kind, "" for code that parses, None to fall back."""
    src = textwrap.dedent(code)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences in the answer
            compile(src, "<answer>", "exec", dont_inherit=True)
    except SyntaxError as e:
        msg = str(e.msg)
        for needle, kind in _PY_CUT:
            if needle in msg:
                return kind
        # an error on the last line of code that parses up to it: a statement cut there
        at_end = e.lineno is not None and e.lineno >= len(src.rstrip().splitlines())
        return "code_statement" if at_end else None
    except (ValueError, MemoryError, RecursionError):
        return None
    return ""


def _strip_comment(line: str, fam: str) -> str:
    marks = {"python": ("#",), "shell": ("#",), "sql": ("--",), "c": ("//",)}[fam]
    for mark in marks:
        i = line.find(mark)
        if i == 0 or (i > 0 and line[i - 1] in " \t"):
            line = line[:i]
    return line


def _shell_open(lines: list[str]) -> bool:
    """Whether an `if`, `case` or loop `do` is still open at the end."""
    stack: list[str] = []
    for line in lines:
        for word in re.findall(r"(?:^|[;\s])(if|case|do|fi|esac|done)(?=$|[;\s])", line):
            if word in _SH_OPEN:
                stack.append(_SH_OPEN[word])
            elif word in stack:
                del stack[len(stack) - 1 - stack[::-1].index(word) :]
    return bool(stack)


def _scan(code: str, fam: str) -> tuple[int, bool]:
    """(brackets left open, whether a string is open at the end) outside strings and
    comments. One-line strings end at their line (an apostrophe in a comment or a Rust
    lifetime does not swallow the rest); Python's triple quotes and JS template literals
    span lines. A closer with no opener (a shell `case` pattern's `a)`) is ignored."""
    pairs = {")": "(", "]": "[", "}": "{"}
    line_comment = {"python": "#", "shell": "#", "sql": "--", "c": "//"}[fam]
    stack: list[str] = []
    i, n = 0, len(code)
    while i < n:
        c = code[i]
        if code.startswith(line_comment, i) and (i == 0 or code[i - 1] in " \t\n;"):
            j = code.find("\n", i)
            i = n if j < 0 else j
            continue
        if fam in ("c", "sql") and code.startswith("/*", i):
            j = code.find("*/", i + 2)
            if j < 0:
                return len(stack), False  # an open block comment: not a string
            i = j + 2
            continue
        if c in "\"'`":
            triple = fam == "python" and code.startswith(c * 3, i)
            quote = c * 3 if triple else c
            spans = triple or (c == "`" and fam == "c")
            j, closed = i + len(quote), False
            while j < n:
                if code[j] == "\\" and fam != "sql" and not (fam == "shell" and c == "'"):
                    j += 2
                    continue
                if code.startswith(quote, j):
                    closed = True
                    break
                if code[j] == "\n" and not spans:
                    break
                j += 1
            if not closed:
                if j >= n:  # the text ends inside the string
                    return len(stack), True
                i += 1  # a lone quote on its line: not a string
                continue
            i = j + len(quote)
            continue
        if c in "([{":
            stack.append(c)
        elif c in pairs and stack and stack[-1] == pairs[c]:
            stack.pop()
        i += 1
    return len(stack), False
