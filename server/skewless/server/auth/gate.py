"""The gate that authenticates every call before its handler runs.

It wraps each method's handler once, when the server registers it
(`skewless.server.rpc.register_service(..., gate=...)`), not as a
`grpc.aio.ServerInterceptor`: grpc.aio runs interceptors as extra coroutines on every
call, a cost the wrapped handler does not pay.

For each method it finds the method's rule (`permissions.rule_for`): open methods
(health) pass untouched; any other call must authenticate, and its principal is made
the call's `CallAuth` (a context variable the servicers' permission checks read).
Project-level rules (`read_registry`) are checked here; resource-level ones by the
servicer, and a servicer that answered without checking is refused (a missing check
never lets a call through). A method without a rule is refused.

Failures end the call with the status the one boundary would send (`to_status`:
code, message, `ErrorInfo`), are counted in `skewless_requests_total`, and audited.
The cost per call is the authentication (cached for JWTs and certificates).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc
from grpc_status import rpc_status

from skewless.core.errors import SkewlessError, UnauthenticatedError
from skewless.server import metrics
from skewless.server.auth import audit
from skewless.server.auth.authenticator import Authenticator
from skewless.server.auth.permissions import Access, Action, MethodRule, check_static, rule_for
from skewless.server.auth.principal import CallAuth, set_call
from skewless.server.errors import to_status

__all__ = ["AuthGate"]

_log = logging.getLogger(__name__)
Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class AuthGate:
    """Authenticates calls and applies the method rules (a `skewless.server.rpc.Gate`)."""

    def __init__(
        self, authenticator: Authenticator, access: Access, *, open_reflection: bool
    ) -> None:
        """Binds the gate to the authenticator and the permission check."""
        self.authenticator = authenticator
        self.access = access
        self.open_reflection = open_reflection

    def __call__(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """The handler to install for `method` (`/pkg.Service/Method`): wrapped unless open."""
        rule = rule_for(method, open_reflection=self.open_reflection)
        if rule is not None and rule.open:
            return handler
        return self._wrap(handler, method, rule)

    async def _admit(self, context: Ctx, rpc: str, rule: MethodRule | None) -> CallAuth:
        """Authenticates the call and applies a project-level rule; aborts on failure."""
        started = time.perf_counter()
        peer = context.peer() or ""
        try:
            principal = await self.authenticator.authenticate(context)
        except UnauthenticatedError as exc:
            audit.unauthenticated(rpc, exc.reason, peer)
            await self._abort(context, exc, rpc, started)
            raise AssertionError("unreachable") from exc  # abort raises
        call = CallAuth(principal=principal, peer=peer, rpc=rpc)
        refusal: SkewlessError | None = None
        if rule is None:  # a method nobody gave a rule: admins only
            _log.error("no permission rule for %s: only admin may call it", rpc)
            refusal = check_static(call, self.access.policies, Action.ADMIN)
        elif rule.action is not None:
            refusal = check_static(call, self.access.policies, rule.action)
        if refusal is not None:
            await self._abort(context, refusal, rpc, started)
        return call

    async def _abort(self, context: Ctx, exc: SkewlessError, rpc: str, started: float) -> None:
        metrics.observe_request(rpc, "", exc.code, time.perf_counter() - started)
        await context.abort_with_status(rpc_status.to_status(to_status(exc)))

    async def _unchecked(self, context: Ctx, call: CallAuth) -> None:
        """A servicer answered without checking permissions: admins only (a bug to fix)."""
        _log.error("%s answered without a permission check: only admin may have it", call.rpc)
        refusal = check_static(call, self.access.policies, Action.ADMIN)
        if refusal is not None:
            await context.abort_with_status(rpc_status.to_status(to_status(refusal)))

    def _wrap(self, handler: Any, method: str, rule: MethodRule | None) -> Any:
        rpc = method.rsplit("/", 1)[-1]
        must_check = rule is not None and rule.in_servicer
        admit = self._admit
        unchecked = self._unchecked
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: Ctx) -> Any:
                call = await admit(context, rpc, rule)
                set_call(call)
                response = await inner_uu(request, context)
                if must_check and not call.checked:
                    await unchecked(context, call)
                return response

            return grpc.unary_unary_rpc_method_handler(unary_unary, **kwargs)
        if handler.stream_stream is not None:
            inner_ss = handler.stream_stream

            async def stream_stream(requests: AsyncIterator[Any], context: Ctx) -> Any:
                call = await admit(context, rpc, rule)
                set_call(call)
                async for response in inner_ss(requests, context):
                    if must_check and not call.checked:
                        await unchecked(context, call)
                    yield response

            return grpc.stream_stream_rpc_method_handler(stream_stream, **kwargs)
        if handler.unary_stream is not None:
            inner_us = handler.unary_stream

            async def unary_stream(request: Any, context: Ctx) -> Any:
                call = await admit(context, rpc, rule)
                set_call(call)
                result = inner_us(request, context)
                if hasattr(result, "__aiter__"):
                    async for response in result:
                        yield response
                else:  # a handler that writes with context.write
                    await result

            return grpc.unary_stream_rpc_method_handler(unary_stream, **kwargs)
        inner_su = handler.stream_unary

        async def stream_unary(requests: AsyncIterator[Any], context: Ctx) -> Any:
            await admit(context, rpc, rule)
            return await inner_su(requests, context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, **kwargs)
