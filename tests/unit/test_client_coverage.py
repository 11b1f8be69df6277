"""The Python client covers every RPC of the v1 contract, and nothing else."""

from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path

import grpc
import pytest

import skewless.client
from skewless.client import RPC_METHODS, Client
from skewless.client.errors import SkewlessClientError, from_rpc_error
from skewless.v1 import (
    historical_service_pb2,
    materialization_service_pb2,
    monitoring_service_pb2,
    online_service_pb2,
    registry_service_pb2,
)

_FILES = (
    registry_service_pb2,
    online_service_pb2,
    historical_service_pb2,
    materialization_service_pb2,
    monitoring_service_pb2,
)


def _all_rpcs() -> list[str]:
    rpcs: list[str] = []
    for module in _FILES:
        for service in module.DESCRIPTOR.services_by_name.values():
            rpcs.extend(f"{service.full_name}/{method.name}" for method in service.methods)
    return rpcs


def test_every_rpc_has_a_client_method() -> None:
    rpcs = _all_rpcs()
    assert len(rpcs) >= 16
    assert sorted(RPC_METHODS) == sorted(rpcs), "RPC_METHODS must list exactly the contract's RPCs"
    for rpc, name in RPC_METHODS.items():
        method = getattr(Client, name, None)
        assert callable(method), f"{rpc} has no Client.{name}"
        assert method.__doc__, f"Client.{name} has no docstring"


def test_unary_methods_call_their_rpc() -> None:
    """Each unary method's source calls the stub attribute named after its RPC."""
    for rpc, name in RPC_METHODS.items():
        _service, method_name = rpc.split("/")
        if method_name == "GetHistoricalFeatures":
            continue  # delegated to skewless.client.historical
        source = inspect.getsource(getattr(Client, name))
        calls = {
            node.attr
            for node in ast.walk(ast.parse(source.strip().replace("\n    ", "\n")))
            if isinstance(node, ast.Attribute)
        }
        assert method_name in calls, f"Client.{name} does not call {rpc}"


def test_historical_methods_exist() -> None:
    assert callable(Client.get_historical_features)
    assert callable(Client.iter_historical_batches)


def _optional_imports(tree: ast.AST) -> set[int]:
    """Ids of imports inside `try: ... except ImportError` (optional extras)."""
    optional: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
            for h in node.handlers
        ):
            for stmt in node.body:
                optional.update(id(n) for n in ast.walk(stmt))
    return optional


def test_client_imports_no_server_dependency() -> None:
    """The client package needs only grpcio, grpcio-status, protobuf and pyarrow."""
    root = Path(skewless.client.__file__).parent
    allowed = {"grpc", "grpc_status", "google", "pyarrow", "skewless", "__future__"}
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text())
        optional = _optional_imports(tree)
        for node in ast.walk(tree):
            if id(node) in optional:
                continue
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top == "skewless":
                    assert name.startswith(("skewless.client", "skewless.v1")), (path, name)
                else:
                    assert top in allowed or top in sys.stdlib_module_names, (path, name)


class _FakeCall(grpc.RpcError):
    """A finished call as grpc raises it (code, details, no trailing metadata)."""

    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "boom"

    def trailing_metadata(self) -> tuple[()]:
        return ()


@pytest.mark.parametrize("code", [c for c in grpc.StatusCode if c != grpc.StatusCode.OK])
def test_every_status_code_maps_to_a_typed_error(code: grpc.StatusCode) -> None:
    err = from_rpc_error(_FakeCall(code))
    assert isinstance(err, SkewlessClientError)
    assert err.code == code
    assert err.message == "boom"
    assert type(err) is not SkewlessClientError
    assert type(err).__name__ in skewless.client.__all__
