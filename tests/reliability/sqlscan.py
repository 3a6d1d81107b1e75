"""Finds SQL built from strings: ``.execute``/``.executemany``/``.copy`` calls whose query is
an f-string, a ``%``-formatted string, a concatenation or ``str.format``/``str.join`` with
non-literal parts, and ``sql.SQL(...)`` given such a string.

Values belong in the parameters (``cur.execute("... = %s", (value,))``) and identifiers in
``sql.SQL("... {}").format(sql.Identifier(name))``: psycopg quotes both. A query held in a
local name is followed to its assignments in the same function (or module); attributes and
parameters (``q.upsert``, ``migration.text``) are taken as they are.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

QUERY_METHODS = frozenset({"execute", "executemany", "copy"})


@dataclass(frozen=True, order=True)
class Finding:
    path: str
    line: int
    call: str
    why: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.call}(...): {self.why}"


def _literal(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str | bytes)


def _dynamic(node: ast.expr, scope: dict[str, list[ast.expr]], seen: frozenset[str]) -> str | None:
    """Why the string ``node`` is built from non-literal parts (``None``: it is not)."""
    match node:
        case ast.JoinedStr(values=values) if any(isinstance(v, ast.FormattedValue) for v in values):
            return "an f-string"
        case ast.BinOp(op=ast.Mod(), left=left, right=right) if _stringish(left, scope):
            if not _all_literal(right):
                return "%-formatting"
        case ast.BinOp(op=ast.Add()):
            parts = list(_summands(node))
            if not all(_literal(p) for p in parts) and any(
                _stringish(p, scope) or _dynamic(p, scope, seen) for p in parts
            ):
                return "string concatenation"
        case ast.Call(func=ast.Attribute(value=receiver, attr=("format" | "join") as method)):
            if _literal(receiver) and not all(_literal(a) for a in node.args):
                return f"str.{method}"
        case ast.Name(id=name) if name not in seen:
            for value in scope.get(name, []):
                why = _dynamic(value, scope, seen | {name})
                if why is not None:
                    return f"{why} (via {name})"
    return None


def _summands(node: ast.expr) -> Iterator[ast.expr]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        yield from _summands(node.left)
        yield from _summands(node.right)
    else:
        yield node


def _stringish(node: ast.expr, scope: dict[str, list[ast.expr]]) -> bool:
    if _literal(node) or isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.Name):
        return any(_literal(v) or isinstance(v, ast.JoinedStr) for v in scope.get(node.id, []))
    return False


def _all_literal(node: ast.expr) -> bool:
    if isinstance(node, ast.Tuple):
        return all(isinstance(e, ast.Constant) for e in node.elts)
    return isinstance(node, ast.Constant)


def _assignments(body: Iterable[ast.stmt]) -> dict[str, list[ast.expr]]:
    """Values assigned to plain names in a function (or module) body, nested blocks included
    but not nested functions or classes."""
    out: dict[str, list[ast.expr]] = {}

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            return
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    out.setdefault(target.id, []).append(node.value)
        elif (
            isinstance(node, ast.AnnAssign | ast.AugAssign)
            and isinstance(node.target, ast.Name)
            and node.value is not None
        ):
            value = node.value
            if isinstance(node, ast.AugAssign):  # q += x is q = q + x
                value = ast.BinOp(left=ast.Constant(""), op=node.op, right=value)
            out.setdefault(node.target.id, []).append(value)
        for child in ast.iter_child_nodes(node):
            visit(child)

    for statement in body:
        visit(statement)
    return out


def _queries(call: ast.Call) -> list[ast.expr]:
    found = list(call.args[:1])
    found += [k.value for k in call.keywords if k.arg in ("query", "statement", "sql")]
    return found


def _is_sql_composition(call: ast.Call) -> bool:
    func = call.func
    return (isinstance(func, ast.Attribute) and func.attr == "SQL") or (
        isinstance(func, ast.Name) and func.id == "SQL"
    )


@dataclass
class Scan:
    findings: list[Finding]
    calls: int  # query calls looked at


def scan_source(source: str, path: str) -> Scan:
    tree = ast.parse(source, filename=path)
    findings: list[Finding] = []
    calls = 0
    scopes: list[tuple[ast.AST, dict[str, list[ast.expr]]]] = [(tree, _assignments(tree.body))]
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            scopes.append((node, _assignments(node.body)))
    for owner, scope in scopes:
        for node in _own_nodes(owner):
            if not isinstance(node, ast.Call):
                continue
            if isinstance(node.func, ast.Attribute) and node.func.attr in QUERY_METHODS:
                name = node.func.attr
            elif _is_sql_composition(node):
                name = "SQL"
            else:
                continue
            queries = _queries(node)
            if not queries:
                continue  # redis's pipeline.execute(), dict.copy()
            calls += 1
            for query in queries:
                why = _dynamic(query, scope, frozenset())
                if why is not None:
                    findings.append(Finding(path, node.lineno, name, f"the query is {why}"))
    return Scan(sorted(findings), calls)


def _own_nodes(owner: ast.AST) -> Iterator[ast.AST]:
    """The nodes of a function (or module) outside its nested functions."""
    stack = list(ast.iter_child_nodes(owner))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def scan_tree(root: Path, folders: Iterable[str]) -> Scan:
    findings: list[Finding] = []
    calls = 0
    for folder in folders:
        for file in sorted((root / folder).rglob("*.py")):
            result = scan_source(file.read_text(), str(file.relative_to(root)))
            findings += result.findings
            calls += result.calls
    return Scan(findings, calls)
