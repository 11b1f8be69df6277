"""Server reflection under both names clients ask for: `grpc.reflection.v1` and `v1alpha`.

grpcurl (1.9 and later), Postman and grpcui ask for `grpc.reflection.v1.ServerReflection`
first and fall back to `v1alpha`; `grpcio-reflection` serves only `v1alpha`. The two
protocols are the same messages with the same field numbers under another package, so
one servicer answers both: its handler is registered under each service name, and a
`grpc/reflection/v1/reflection.proto` descriptor, derived from the v1alpha one with
the package renamed, is added to the default pool so that `describe` finds the v1
service too.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

__all__ = ["SERVICE_NAMES", "V1_SERVICE_NAME", "add_reflection", "ensure_v1_descriptor"]

_V1ALPHA_PACKAGE = "grpc.reflection.v1alpha"
_V1_PACKAGE = "grpc.reflection.v1"
_V1_FILE = "grpc/reflection/v1/reflection.proto"
#: The v1 reflection service's full name.
V1_SERVICE_NAME = f"{_V1_PACKAGE}.ServerReflection"
#: Both reflection services, v1 first (the one current clients ask for).
SERVICE_NAMES = (V1_SERVICE_NAME, reflection.SERVICE_NAME)


def _renamed(type_name: str) -> str:
    prefix = f".{_V1ALPHA_PACKAGE}."
    return (
        f".{_V1_PACKAGE}." + type_name[len(prefix) :] if type_name.startswith(prefix) else type_name
    )


def ensure_v1_descriptor() -> None:
    """Adds the v1 reflection proto to the default descriptor pool (once)."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_V1_FILE)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = _V1_FILE
    proto.package = _V1_PACKAGE
    proto.options.java_package = "io.grpc.reflection.v1"
    proto.options.java_outer_classname = "ServerReflectionProto"
    for message in proto.message_type:
        for fd in message.field:
            if fd.HasField("type_name"):
                fd.type_name = _renamed(fd.type_name)
    for service in proto.service:
        for method in service.method:
            method.input_type = _renamed(method.input_type)
            method.output_type = _renamed(method.output_type)
    pool.AddSerializedFile(proto.SerializeToString())


def add_reflection(servicer: reflection.aio.ReflectionServicer, server: Any) -> None:
    """Registers one reflection servicer as both v1alpha and v1 on a server.

    Args:
        servicer: The reflection servicer (it lists the names it was built with).
        server: A server, or anything with `add_registered_method_handlers`
            (`skewless.server.rpc.register_wrapped` passes its stand-in).

    """
    ensure_v1_descriptor()
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    handlers = {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
    }
    server.add_registered_method_handlers(V1_SERVICE_NAME, handlers)
