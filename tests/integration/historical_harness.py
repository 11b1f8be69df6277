"""Historical retrieval in the cross-language contract: the questions and the canonical form.

Every client asks `HISTORICAL_QUESTIONS` (entity rows by `path`, see `contract_history`)
against the contract fixture and prints the answers in the canonical JSON form of
docs/clients.md: per question the rows of each returned record batch (`batches`) and
every column with its name, canonical type and values, or the error of a failed call.
The Go (`clients/go/cmd/historical`) and Java (`HistoricalExample`) programs hard-code
the same questions.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import grpc
import pyarrow as pa
from google.rpc import status_pb2
from grpc_status import rpc_status

from skewless.v1 import historical_service_pb2, historical_service_pb2_grpc, types_pb2

try:
    from . import client_harness as h
    from .contract_history import ENTITY_ROWS_FILE
except ImportError:
    import client_harness as h  # type: ignore[no-redef]
    from contract_history import ENTITY_ROWS_FILE  # type: ignore[no-redef]


@dataclass(frozen=True)
class HistoricalQuestion:
    """One GetHistoricalFeatures call of the contract test.

    Attributes:
        name: The key of this answer in the canonical JSON.
        feature_service: A feature service name, or None for `features`.
        features: Feature references when `feature_service` is None.
        full_feature_names: Whether to ask for `view__feature` names.
        path: The entity rows file, relative to the served repository.
        batch_size: Rows per returned record batch (0: the server chooses).

    """

    name: str
    feature_service: str | None = None
    features: tuple[str, ...] = ()
    full_feature_names: bool = False
    path: str = ENTITY_ROWS_FILE
    batch_size: int = 0

    def selection(self) -> dict[str, Any]:
        """`feature_service` or `features`, as the Python client takes them."""
        if self.feature_service is not None:
            return {"feature_service": self.feature_service}
        return {"features": list(self.features)}

    def query(self) -> historical_service_pb2.HistoricalQuery:
        """The query message, built with the generated Python stubs."""
        query = historical_service_pb2.HistoricalQuery(
            path=self.path, full_feature_names=self.full_feature_names, batch_size=self.batch_size
        )
        if self.feature_service is not None:
            query.feature_service = self.feature_service
        else:
            query.features.CopyFrom(types_pb2.FeatureList(features=list(self.features)))
        return query


#: The questions every client asks, in order.
HISTORICAL_QUESTIONS: tuple[HistoricalQuestion, ...] = (
    HistoricalQuestion("feature_service", feature_service="driver_ranking", batch_size=4),
    HistoricalQuestion(
        "feature_list",
        features=("driver_stats:conv_rate", "customer_profile:segment"),
        full_feature_names=True,
    ),
    HistoricalQuestion("unknown_feature", features=("driver_stats:no_such_feature",)),
    HistoricalQuestion("missing_rows", feature_service="driver_ranking", path="no_rows.parquet"),
)

_TYPES = {
    pa.int32(): "int32",
    pa.int64(): "int64",
    pa.float32(): "float32",
    pa.float64(): "float64",
    pa.string(): "string",
    pa.large_string(): "string",
    pa.bool_(): "bool",
    pa.binary(): "binary",
}


def canonical_type(kind: pa.DataType) -> str:
    """The canonical name of an Arrow type: `int64`, `float32`, `timestamp[us, tz=UTC]`..."""
    if isinstance(kind, pa.TimestampType):
        return f"timestamp[{kind.unit}, tz={kind.tz}]" if kind.tz else f"timestamp[{kind.unit}]"
    return _TYPES.get(kind, str(kind))


def canonical_arrow_value(value: Any) -> Any:
    """A cell as JSON: null, number, string, bool, base64 bytes, or a canonical time."""
    if isinstance(value, dt.datetime):
        when = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


def canonical_batches(schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> dict[str, Any]:
    """A result: the rows of each record batch, then every column in schema order."""
    batches = list(batches)
    table = pa.Table.from_batches(batches, schema=schema)
    return {
        "batches": [b.num_rows for b in batches],
        "columns": [
            {
                "name": field.name,
                "type": canonical_type(field.type),
                "values": [canonical_arrow_value(v) for v in column.to_pylist()],
            }
            for field, column in zip(schema, table.columns, strict=True)
        ],
    }


def python_client_historical_answers(addr: str) -> dict[str, Any]:
    """Asks `HISTORICAL_QUESTIONS` through the Python client (`skewless.client.Client`)."""
    from skewless.client import Client, SkewlessClientError

    out: list[dict[str, Any]] = []
    with Client(addr, timeout=30) as client:
        for question in HISTORICAL_QUESTIONS:
            entry: dict[str, Any] = {"name": question.name}
            try:
                batches = list(
                    client.iter_historical_batches(
                        question.path,
                        **question.selection(),
                        full_feature_names=question.full_feature_names,
                        result_batch_rows=question.batch_size,
                    )
                )
            except SkewlessClientError as exc:
                entry["error"] = h.canonical_client_error(exc)
            else:
                entry.update(canonical_batches(batches[0].schema, batches))
            out.append(entry)
    return {"queries": out}


def python_stub_historical_answers(addr: str) -> dict[str, Any]:
    """Asks `HISTORICAL_QUESTIONS` through the generated Python stub and message classes."""
    out: list[dict[str, Any]] = []
    with grpc.insecure_channel(addr) as channel:
        stub = historical_service_pb2_grpc.HistoricalServiceStub(channel)
        for question in HISTORICAL_QUESTIONS:
            entry: dict[str, Any] = {"name": question.name}
            request = historical_service_pb2.GetHistoricalFeaturesRequest(query=question.query())
            try:
                responses = list(stub.GetHistoricalFeatures(iter([request]), timeout=30))
            except grpc.RpcError as exc:
                status = rpc_status.from_call(exc)  # type: ignore[arg-type]
                if status is None:
                    status = status_pb2.Status(code=exc.code().value[0], message=exc.details())
                entry["error"] = h.canonical_error(status)
                out.append(entry)
                continue
            first, rest = responses[0], responses[1:]
            assert first.HasField("arrow_schema") and not first.HasField("arrow_record_batch")
            schema = pa.ipc.read_schema(pa.py_buffer(first.arrow_schema.serialized_schema))
            batches = []
            for response in rest:
                assert response.HasField("arrow_record_batch")
                assert not response.HasField("arrow_schema")
                part = response.arrow_record_batch
                batch = pa.ipc.read_record_batch(pa.py_buffer(part.serialized_record_batch), schema)
                assert batch.num_rows == part.row_count
                batches.append(batch)
            entry.update(canonical_batches(schema, batches))
            out.append(entry)
    return {"queries": out}
