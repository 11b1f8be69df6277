"""The one servicer boundary: how every RPC is registered, decoded, measured and failed.

Every method of every service is registered through `register_service` (skewless's
own) or `register_wrapped` (health, reflection), which install raw-bytes handlers:

* the request bytes are decoded here, so bytes that do not parse as the request
  message are INVALID_ARGUMENT (`MALFORMED_REQUEST`), never UNKNOWN or INTERNAL;
* a handler may return (or yield) a message or its serialized bytes: the fast paths
  assemble wire bytes themselves and they go out untouched;
* every call is counted and timed once (`skewless.server.metrics.observe_request`), with
  the feature service it concerned once the handler has found it (`label_call`);
* an exception ends the call with the status `skewless.server.errors.to_status` builds:
  a `SkewlessError` with its code, reason and capped details; anything else INTERNAL
  without internal text (and logged).
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from grpc_status import rpc_status

from skewless.core.errors import InvalidArgumentError
from skewless.server import metrics
from skewless.server.errors import code_name, to_status

__all__ = [
    "BidiHandler",
    "Gate",
    "UnaryHandler",
    "label_call",
    "register_service",
    "register_wrapped",
    "request_bytes",
]

_log = logging.getLogger(__name__)

#: A unary method: the parsed request and the context in, a message or its bytes out.
UnaryHandler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Message | bytes]]
#: A bidi-streaming method: parsed requests in, messages or their bytes out.
BidiHandler = Callable[
    [AsyncIterator[Any], grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Message | bytes]
]

#: Wraps each method's handler once, at registration (the authentication gate): the full
#: method name (`/pkg.Service/Method`) and its handler in, the handler to install out.
Gate = Callable[[str, "grpc.RpcMethodHandler[Any, Any]"], "grpc.RpcMethodHandler[Any, Any]"]

_LABEL: contextvars.ContextVar[str] = contextvars.ContextVar("skewless_rpc_label", default="")
_REQUEST: contextvars.ContextVar[bytes] = contextvars.ContextVar(
    "skewless_rpc_request", default=b""
)


def request_bytes() -> bytes:
    """The current unary call's request as received (empty outside one).

    The feature log hands these off instead of serializing the parsed request again.
    """
    return _REQUEST.get()


def label_call(feature_service: str) -> None:
    """Labels the current call's metrics with a feature service (call once it is known).

    Only a name known to exist should be given, so that callers cannot create label
    values.
    """
    _LABEL.set(feature_service)


def _parse(message_class: type[Message], data: bytes) -> Any:
    try:
        return message_class.FromString(data)
    except Exception:  # DecodeError, or a recursion or size limit of the parser
        raise InvalidArgumentError(
            f"the request is not a valid {message_class.DESCRIPTOR.full_name} message "
            f"({len(data):,} bytes); send the message the contract defines",
            field="",
            reason="MALFORMED_REQUEST",
            metadata={"message": message_class.DESCRIPTOR.full_name, "bytes": str(len(data))},
        ) from None


def _serialize(response: Message | bytes) -> bytes:
    return response if isinstance(response, bytes) else response.SerializeToString()


async def _fail(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> None:
    await context.abort_with_status(rpc_status.to_status(to_status(exc)))


def _outcome(exc: BaseException | None, context: grpc.aio.ServicerContext[Any, Any]) -> str:
    if isinstance(exc, grpc.aio.AbortError):  # the handler ended the call with a status
        code = context.code()
        return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    return code_name(exc)


@dataclass(frozen=True)
class _Method:
    rpc: str
    request: type[Message]


def _unary(method: _Method, handler: UnaryHandler) -> grpc.RpcMethodHandler[Any, Any]:
    async def behavior(data: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        started = time.perf_counter()
        _LABEL.set("")
        _REQUEST.set(data)
        try:
            response = _serialize(await handler(_parse(method.request, data), context))
        except BaseException as exc:
            # Recorded before the status leaves, so a caller that got it sees it counted.
            _record(method, context, exc, started)
            if isinstance(exc, (grpc.aio.AbortError, grpc.aio.UsageError)) or not isinstance(
                exc, Exception
            ):
                raise
            await _fail(context, exc)
            raise AssertionError("unreachable") from exc  # abort always raises
        _record(method, context, None, started)
        return response

    return grpc.unary_unary_rpc_method_handler(behavior)


def _record(
    method: _Method,
    context: grpc.aio.ServicerContext[Any, Any],
    failure: BaseException | None,
    started: float,
) -> None:
    metrics.observe_request(
        method.rpc, _LABEL.get(), _outcome(failure, context), time.perf_counter() - started
    )


def _bidi(method: _Method, handler: BidiHandler) -> grpc.RpcMethodHandler[Any, Any]:
    async def behavior(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        started = time.perf_counter()
        _LABEL.set("")

        async def parsed() -> AsyncIterator[Any]:
            async for data in requests:
                yield _parse(method.request, data)

        try:
            async for response in handler(parsed(), context):
                yield _serialize(response)
        except BaseException as exc:
            _record(method, context, exc, started)  # before the status leaves
            if isinstance(exc, (grpc.aio.AbortError, grpc.aio.UsageError)) or not isinstance(
                exc, Exception
            ):
                raise
            await _fail(context, exc)
            return
        _record(method, context, None, started)

    return grpc.stream_stream_rpc_method_handler(behavior)


def _add(
    server: grpc.aio.Server,
    service: str,
    handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]],
    gate: Gate | None,
) -> None:
    # Generic handlers only, never `add_registered_method_handlers`: for every registered
    # method grpc.aio keeps a call request pending with the core and waits on all of them
    # after each call (one future per method, ~20 here), which costs more than the lookup
    # by path that a generic handler does. The gate wraps each handler here, once, rather
    # than as a `grpc.aio.ServerInterceptor`, which grpc.aio runs as extra coroutines on
    # every call.
    if gate is not None:
        handlers = {name: gate(f"/{service}/{name}", h) for name, h in handlers.items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))


def register_service(
    server: grpc.aio.Server,
    service: ServiceDescriptor,
    handlers: Mapping[str, UnaryHandler | BidiHandler],
    gate: Gate | None = None,
) -> None:
    """Registers every method of one skewless service through the boundary.

    Args:
        server: The server.
        service: The service's descriptor (from the generated `*_pb2` module).
        handlers: A handler per method name; each method of the service must have one.
            Unary methods take `UnaryHandler`s, bidi-streaming ones `BidiHandler`s.
        gate: Wraps each installed handler (authentication), if any.

    Raises:
        ValueError: A method has no handler, or a handler names no method.

    """
    methods = {m.name: m for m in service.methods}
    if set(methods) != set(handlers):
        raise ValueError(
            f"{service.full_name}: handlers {sorted(handlers)} do not match the methods "
            f"{sorted(methods)}"
        )
    from google.protobuf import message_factory

    installed: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for name, descriptor in methods.items():
        request = message_factory.GetMessageClass(descriptor.input_type)
        method = _Method(rpc=name, request=request)
        if descriptor.client_streaming and descriptor.server_streaming:
            installed[name] = _bidi(method, handlers[name])  # type: ignore[arg-type]
        elif not descriptor.client_streaming and not descriptor.server_streaming:
            installed[name] = _unary(method, handlers[name])  # type: ignore[arg-type]
        else:
            raise ValueError(f"{service.full_name}/{name}: no boundary for this streaming kind")
    _add(server, service.full_name, installed, gate)


class _Capture:
    """Stands in for a server to collect what a generated `add_*_to_server` registers."""

    def __init__(self) -> None:
        self.services: dict[str, dict[str, grpc.RpcMethodHandler[Any, Any]]] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass  # the same handlers arrive by name below

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        self.services[service] = dict(handlers)


def _invalid(deserializer: Callable[[bytes], Any], data: bytes) -> Any:
    try:
        return deserializer(data)
    except Exception:
        return _MALFORMED


_MALFORMED = object()


async def _abort_malformed(context: grpc.aio.ServicerContext[Any, Any], size: int) -> None:
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"the request is not a valid message for this method ({size:,} bytes)",
    )


def _wrapped(handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler, decoding requests itself.

    Bytes that do not parse end the call with INVALID_ARGUMENT instead of grpc's
    UNKNOWN/INTERNAL.
    """
    decode = handler.request_deserializer
    encode = handler.response_serializer
    if decode is None:
        return handler
    if handler.unary_unary is not None:
        inner_uu = handler.unary_unary

        async def unary_unary(data: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            request = _invalid(decode, data)
            if request is _MALFORMED:
                await _abort_malformed(context, len(data))
            return await inner_uu(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, response_serializer=encode)
    if handler.unary_stream is not None:
        inner_us = handler.unary_stream
        if not inspect.isasyncgenfunction(inner_us):  # it writes with `context.write`

            async def unary_stream_writes(
                data: bytes, context: grpc.aio.ServicerContext[Any, Any]
            ) -> None:
                request = _invalid(decode, data)
                if request is _MALFORMED:
                    await _abort_malformed(context, len(data))
                await inner_us(request, context)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream_writes, response_serializer=encode
            )

        async def unary_stream(
            data: bytes, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            request = _invalid(decode, data)
            if request is _MALFORMED:
                await _abort_malformed(context, len(data))
            async for item in inner_us(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(unary_stream, response_serializer=encode)
    if handler.stream_stream is not None:
        inner_ss = handler.stream_stream

        async def stream_stream(
            requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            async def parsed() -> AsyncIterator[Any]:
                async for data in requests:
                    request = _invalid(decode, data)
                    if request is _MALFORMED:
                        await _abort_malformed(context, len(data))
                    yield request

            async for item in inner_ss(parsed(), context):
                yield item

        return grpc.stream_stream_rpc_method_handler(stream_stream, response_serializer=encode)
    return handler


def register_wrapped(
    server: grpc.aio.Server, add: Callable[[Any], None], gate: Gate | None = None
) -> None:
    """Registers services another library adds (health, reflection) behind our decoding.

    Args:
        server: The server.
        add: Calls the library's registration with the object it is given, e.g.
            `lambda s: health_pb2_grpc.add_HealthServicer_to_server(servicer, s)`.
        gate: Wraps each installed handler (authentication), if any.

    """
    capture = _Capture()
    add(capture)
    for service, handlers in capture.services.items():
        _add(server, service, {name: _wrapped(h) for name, h in handlers.items()}, gate)
