"""Every header a connector writes goes through connectors/headers.py. This reads every module of
connectors/ (a new connector included) and fails on anything that assembles headers by hand;
the checker itself is tried on snippets of each kind of bypass, so it cannot pass vacuously."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONNECTORS = ROOT / "connectors"
BUILDER = CONNECTORS / "headers.py"

# The email package's message and header classes: only the builder may touch them.
EMAIL_MODULES = re.compile(r"email\.(message|mime|header|headerregistry|generator|policy|utils)")
# Methods that write a header of an email.message.Message or a header map.
WRITERS = {"add_header", "replace_header", "set_raw", "set_param", "__setitem__", "setdefault"}
# smtplib calls that take recipients from headers (send_message reads To/Cc/Bcc).
HEADER_RECIPIENTS = {"send_message", "sendmail"}
# Names under which a message or a header map is usually held.
HEADERISH = {"msg", "message", "mail", "email", "mime", "headers", "header", "hdrs"}
# `Name: value` at the start of a string: a header line written by hand.
HEADER_LINE = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)*:[ \t]")
FIELD_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)+$|^[A-Z][a-z]+(?:-[A-Z][a-z]+)*$")


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _leading_text(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
        v = node.value
        return v.decode("latin-1") if isinstance(v, bytes) else v
    if isinstance(node, ast.JoinedStr) and node.values:
        return _leading_text(node.values[0])
    return None


def violations(source: str, name: str = "<snippet>") -> Iterator[str]:
    tree = ast.parse(source)
    docs = _docstrings(tree)
    for node in ast.walk(tree):
        where = f"{name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            mods = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            )
            for mod in mods:
                if EMAIL_MODULES.match(mod):
                    yield f"{where}: imports {mod} (build headers with connectors.headers)"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
            if id(node) in docs:
                continue
            text = _leading_text(node) or ""
            if "\r" in text:
                yield f"{where}: a CR in a string: a header or SMTP line written by hand"
        elif isinstance(node, ast.Assign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Subscript):
                    key = _leading_text(t.slice)
                    if key is not None and FIELD_LIKE.match(key):
                        yield f"{where}: [{key!r}] = ...: a header written past the builder"
                    elif _name_of(t.value) in HEADERISH:
                        yield f"{where}: {_name_of(t.value)}[...] = ...: a header past the builder"
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute):
                if func.attr in WRITERS and node.args and _is_field(node.args[0]):
                    yield f"{where}: .{func.attr}(...): a header written past the builder"
                if func.attr in HEADER_RECIPIENTS:
                    yield f"{where}: .{func.attr}(...): recipients must go to RCPT TO alone"
                if (
                    func.attr == "join"
                    and isinstance(func.value, ast.Constant)
                    and func.value.value in ("\r\n", b"\r\n", "\n", b"\n")
                    and any(_mentions_header(a) for a in node.args)
                ):
                    yield f"{where}: lines joined into a header block by hand"
            for kw in node.keywords:
                if kw.arg == "headers" and isinstance(kw.value, ast.Dict | ast.DictComp):
                    yield f"{where}: headers={{...}}: use HeaderBuilder.for_http()...http()"
                if (
                    kw.arg == "headers"
                    and isinstance(kw.value, ast.Call)
                    and isinstance(kw.value.func, ast.Name)
                    and kw.value.func.id == "dict"
                ):
                    yield f"{where}: headers=dict(...): use HeaderBuilder.for_http()...http()"
        if isinstance(node, ast.Constant | ast.JoinedStr) and id(node) not in docs:
            text = _leading_text(node)
            if text and HEADER_LINE.match(text) and FIELD_LIKE.match(text.split(":")[0]):
                yield f"{where}: {text.split(':')[0]!r}: ...: a header line written by hand"


def _name_of(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id.lower()
    if isinstance(node, ast.Attribute):
        return node.attr.lower().lstrip("_")
    return ""


def _is_field(node: ast.AST) -> bool:
    text = _leading_text(node)
    return text is not None and bool(FIELD_LIKE.match(text))


def _mentions_header(node: ast.AST) -> bool:
    return any(
        (t := _leading_text(n)) is not None and bool(HEADER_LINE.match(t)) for n in ast.walk(node)
    )


def _connector_modules() -> list[Path]:
    return sorted(p for p in CONNECTORS.rglob("*.py") if p != BUILDER)


def test_connectors_write_headers_only_through_the_builder() -> None:
    bad = [
        v
        for path in _connector_modules()
        for v in violations(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())
    ]
    assert not bad, "\n".join(bad)


def test_the_smtp_sender_builds_through_the_builder() -> None:
    source = (CONNECTORS / "smtp.py").read_text(encoding="utf-8")
    assert "HeaderBuilder.for_mail()" in source and "email_message(" in source


@pytest.mark.parametrize(
    "snippet",
    [
        'msg["To"] = rcpt',
        'msg["X-Campaign-Id"] = cid',
        "msg[name] = value",
        "self._headers[key] = value",
        'headers["login-customer-id"] = x',
        'msg.add_header("Subject", s)',
        'm.__setitem__("Bcc", x)',
        "from email.message import EmailMessage",
        "import email.mime.text",
        "from email.header import Header",
        "from email import utils",
        'head = f"To: {rcpt}"',
        'head = "Subject: " + s',
        'data = b"Message-ID: <x>"',
        'block = "\\r\\n".join(lines)',
        'block = "\\n".join([f"From: {a}", f"To: {b}"])',
        'client.post(url, headers={"Authorization": token})',
        "client.post(url, headers=dict(a=b))",
        "smtp.send_message(msg)",
        "smtp.sendmail(a, b, c)",
    ],
)
def test_the_checker_finds_each_kind_of_bypass(snippet: str) -> None:
    assert list(violations(snippet)), snippet


@pytest.mark.parametrize(
    "snippet",
    [
        'data["id"] = 1',
        'raise ValueError(f"customer_id: expected digits, got {x!r}")',
        'raise RuntimeError(f"smtp {code}: {text}")',
        'line = json.dumps(rec) + "\\n"',
        "client.post(url, json=body, headers=self._headers())",
        '"""Docstring with\\r\\nTo: a@b."""',
    ],
)
def test_the_checker_lets_ordinary_code_be(snippet: str) -> None:
    assert not list(violations(snippet)), snippet
