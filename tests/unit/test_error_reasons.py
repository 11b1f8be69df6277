"""Every error reason in the code means one error: one reason, one gRPC status code.

AIP-193: a client branches on `ErrorInfo.reason`, so a reason must always come with the
same code. This walks every raise site of a `SkewlessError` subclass in the server-side
packages (by parsing the source) and checks that each names its reason explicitly and
that no reason is raised with two codes.
"""

from __future__ import annotations

import ast
import inspect
from collections import defaultdict
from pathlib import Path

from google.rpc import code_pb2

from skewless.core import errors
from skewless.server.errors import to_status

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "registry", "offline", "online", "materialization", "server")

#: Every `SkewlessError` subclass, by name, with its status code.
CLASSES = {
    name: cls
    for name, cls in vars(errors).items()
    if inspect.isclass(cls) and issubclass(cls, errors.SkewlessError)
}


def _module_constants(tree: ast.Module) -> dict[str, str]:
    """Module-level `NAME = "literal"` assignments (a reason may be held in one)."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name) and isinstance(node.value.value, str):
                    out[target.id] = node.value.value
    return out


def _helpers(tree: ast.Module) -> dict[str, tuple[str, int, str]]:
    """Functions that build an error with `reason=<one of their parameters>`.

    Returns: function name -> (error class, parameter position, parameter name).
    """
    out = {}
    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef):
            continue
        params = [a.arg for a in func.args.args + func.args.kwonlyargs]
        for node in ast.walk(func):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            if node.func.id not in CLASSES:
                continue
            for keyword in node.keywords:
                value = keyword.value
                if keyword.arg == "reason" and isinstance(value, ast.Name) and value.id in params:
                    out[func.name] = (node.func.id, params.index(value.id), value.id)
    return out


def _literal(
    node: ast.expr | None, constants: dict[str, str], imported: dict[str, str]
) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id) or imported.get(node.id)
    return None


#: Reasons held in constants that modules import (`from skewless.online.resp import ...`).
IMPORTED = {"ONLINE_STORE_UNAVAILABLE": "ONLINE_STORE_UNAVAILABLE"}


def _raise_sites() -> list[tuple[str, str, str | None]]:
    """(where, class name, reason or None) of every error construction."""
    sites = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            constants = _module_constants(tree)
            helpers = _helpers(tree)
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
                    continue
                name = node.func.id
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                if name in helpers:  # a call of a helper: its argument is the reason
                    cls, index, param = helpers[name]
                    arg = next((k.value for k in node.keywords if k.arg == param), None)
                    if arg is None and index < len(node.args):
                        arg = node.args[index]
                    reason = _literal(arg, constants, IMPORTED)
                    sites.append((where, cls, reason or f"<computed at {where}>"))
                    continue
                if name not in CLASSES or name == "SkewlessError":
                    continue
                keyword = next((k.value for k in node.keywords if k.arg == "reason"), None)
                if keyword is None:
                    sites.append((where, name, None))
                    continue
                if isinstance(keyword, ast.Name) and any(
                    keyword.id == param for _, _, param in helpers.values()
                ):
                    continue  # inside a helper: counted at the helper's call sites
                reason = _literal(keyword, constants, IMPORTED)
                sites.append((where, name, reason or f"<computed at {where}>"))
    return sites


def test_every_raise_site_names_its_reason() -> None:
    missing = [f"{where} ({cls})" for where, cls, reason in _raise_sites() if reason is None]
    assert missing == [], "raise sites without an explicit reason=:\n" + "\n".join(missing)


def test_no_reason_is_computed() -> None:
    """A reason is a literal, or a constant or helper argument that is one."""
    computed = [r for _, _, r in _raise_sites() if r is not None and r.startswith("<computed")]
    assert computed == []


def test_each_reason_maps_to_exactly_one_code() -> None:
    codes: dict[str, set[str]] = defaultdict(set)
    where: dict[str, list[str]] = defaultdict(list)
    for site, cls, reason in _raise_sites():
        if reason is None or reason.startswith("<computed"):
            continue
        codes[reason].add(CLASSES[cls].code)
        where[reason].append(f"{site} {CLASSES[cls].code}")
    clashes = {reason: where[reason] for reason, found in codes.items() if len(found) > 1}
    assert clashes == {}
    assert len(codes) > 60  # the walk found the raise sites


def test_every_code_is_a_google_rpc_code_and_reaches_the_wire() -> None:
    for cls in CLASSES.values():
        assert cls.code in code_pb2.Code.keys(), cls  # noqa: SIM118 - enum wrapper
        status = to_status(cls("m", reason="SOME_REASON"))
        assert code_pb2.Code.Name(status.code) == cls.code
    assert code_pb2.Code.Name(to_status(ValueError("x")).code) == "INTERNAL"
