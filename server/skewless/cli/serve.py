"""`skewless serve`: the gRPC server on the repository, with its embedded Redis if needed."""

from __future__ import annotations

import argparse
import dataclasses
import socket
import sys
import threading
from typing import Any

from skewless.cli.exit_codes import EXIT_OK
from skewless.cli.ui import bind_console, console_target
from skewless.core.config import RepoConfig, load_repo_config
from skewless.core.errors import DefinitionError, FailedPreconditionError

__all__ = ["add_commands"]

#: `serve --ui-port` binds the console on loopback only.
DEFAULT_UI_HOST = "127.0.0.1"


def _config(args: argparse.Namespace) -> RepoConfig:
    config = load_repo_config(args.repo)
    changes: dict[str, Any] = {}  # RepoConfig field name -> new value
    if args.port is not None:
        changes["server_port"] = args.port
    if args.host:
        changes["server_host"] = args.host
    if args.redis_url:
        changes["redis_url"] = args.redis_url
    if args.metrics_port is not None:
        changes["metrics_port"] = args.metrics_port
    if args.insecure:
        changes["server_insecure"] = True
    return dataclasses.replace(config, **changes)


def _start_console(sock: Any, served: RepoConfig) -> Any:
    from skewless.cli.embedded_console import console_settings
    from skewless.console import ConsoleServer

    target = console_target(served.server_host, served.server_port)
    settings = console_settings(served, target)
    console = ConsoleServer(settings, sock=sock).start()
    print(f"skewless console on {console.url}", flush=True)
    # Off the server's event loop (this runs on it): the check calls that server.
    threading.Thread(
        target=_check_console, args=(settings, served), name="console-check", daemon=True
    ).start()
    return console


def _check_console(settings: Any, served: RepoConfig) -> None:
    """Says whether the console reaches the server, and if not what to set."""
    from skewless.cli.embedded_console import probe

    trouble = probe(settings, served)
    if trouble is not None:
        print(f"error: {trouble}", file=sys.stderr, flush=True)
        return
    how = "plaintext"
    if settings.secure:
        how = "mutual TLS" if settings.certificate_chain else "TLS"
    print(f"skewless console reaches the server {settings.target} over {how}", flush=True)


def _refuse_port_in_use(host: str, port: int) -> None:
    """Refuses a gRPC port something already listens on, before anything starts.

    The server binds with SO_REUSEPORT (for `--workers`), so a second `skewless serve` on
    the same port would otherwise share it silently, each answering some of the calls.
    """
    if port == 0:
        return
    target = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host.strip("[]")
    try:
        with socket.create_connection((target, port), timeout=0.5):
            pass
    except OSError:
        return
    raise FailedPreconditionError(
        f"port {port} on {host} is already in use (another `skewless serve`, or another "
        "program): stop it, or serve on another port with --port P (0 picks a free one) "
        "or server.port in skewless.yaml",
        reason="PORT_IN_USE",
        metadata={"port": str(port)},
    )


def _serve(args: argparse.Namespace) -> int:
    from skewless.online.connection import redacted_url
    from skewless.online.embedded_redis import online_store_config
    from skewless.server.app import serve
    from skewless.server.auth import build_authenticator
    from skewless.server.tls import CertificateFiles, plaintext_refusal
    from skewless.server.workers import default_workers, serve_workers

    workers = args.workers if args.workers > 0 else default_workers()
    requested = _config(args)
    # Refuse before starting anything: plaintext beyond loopback, or unusable TLS files.
    refusal = plaintext_refusal(requested)
    if refusal is not None:
        raise DefinitionError(refusal, reason="INSECURE_BIND_REFUSED")
    if requested.server_tls is not None:
        CertificateFiles(requested.server_tls)
    _refuse_port_in_use(requested.server_host, requested.server_port)
    build_authenticator(requested.auth)  # the token or JWKS file, before anything starts
    if args.ui_port is not None:
        from skewless.cli.embedded_console import console_settings

        # What the console needs to reach a TLS server, before anything starts.
        console_settings(requested, console_target("127.0.0.1", 1))
    ui_socket = None if args.ui_port is None else bind_console(DEFAULT_UI_HOST, args.ui_port)
    consoles: list[Any] = []  # the console, once the gRPC port is known
    with online_store_config(requested) as (config, embedded):
        if embedded is not None:
            print(f"started embedded redis-server on {embedded.url} (data in {embedded.data_dir})")

        def announce(served: RepoConfig) -> None:
            with_workers = f" with {workers} workers" if workers > 1 else ""
            tls = served.server_tls
            security = "plaintext" if tls is None else ("mutual TLS" if tls.mutual else "TLS")
            if served.auth.enabled:
                security += f", auth {served.auth.mode}"
            print(
                f"skewless serving project {served.project!r} on "
                f"{served.server_host}:{served.server_port}{with_workers} over {security} "
                f"(online store {redacted_url(served.redis_url or '')})",
                flush=True,
            )
            if ui_socket is not None and not consoles:
                consoles.append(_start_console(ui_socket, served))

        try:
            if workers > 1:
                return serve_workers(config, workers, grace=args.grace, on_ready=announce)
            serve(config, grace=args.grace, on_ready=announce)
        finally:
            for console in consoles:
                console.stop()
            if embedded is not None:
                print("stopping embedded redis-server")
    return EXIT_OK


def add_commands(commands: Any) -> None:
    """Adds `serve` to the `skewless` parser's subcommands."""
    p = commands.add_parser("serve", help="serve the repository over gRPC")
    p.add_argument("repo", nargs="?", default=".", help="feature repository (default: .)")
    p.add_argument("--host", help="address to bind (default from skewless.yaml: 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to bind (default 6566; 0 picks a free one)")
    p.add_argument("--redis-url", help="use this Redis instead of the configured/embedded one")
    p.add_argument("--metrics-port", type=int, help="Prometheus port (default 9464; 0 = off)")
    p.add_argument(
        "--insecure",
        action="store_true",
        help="allow plaintext on an address other than loopback (server.insecure); "
        "configure server.tls instead",
    )
    p.add_argument("--grace", type=float, default=5.0, help="seconds in-flight calls get on stop")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port (SO_REUSEPORT); 0 = one per core (default 1)",
    )
    p.add_argument(
        "--ui-port",
        type=int,
        help="also serve the web console on 127.0.0.1:PORT (0 picks a free one)",
    )
    p.set_defaults(func=_serve)
