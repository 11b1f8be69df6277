"""`skewless ui`: the web console, a gRPC client of a running skewless server."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from skewless.cli.exit_codes import EXIT_OK
from skewless.core.errors import SkewlessError

__all__ = ["add_commands", "console_target"]


def console_target(host: str, port: int) -> str:
    """The address the console dials for a server bound to `host:port`."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_console(host: str, port: int) -> Any:
    """Binds the console's socket before anything else starts.

    Raises:
        SkewlessError: The port cannot be bound (the message says which and why).

    """
    from skewless.console.serving import bind

    try:
        return bind(host, port)
    except OSError as exc:
        raise SkewlessError(
            f"cannot serve the console on {host}:{port} ({exc.strerror or exc}): "
            "choose another port"
        ) from None


def _ui(args: argparse.Namespace) -> int:
    from skewless.console import ConsoleServer, ConsoleSettings
    from skewless.console.settings import DEFAULT_TARGET, DEFAULT_UI_HOST, DEFAULT_UI_PORT

    target = args.target or DEFAULT_TARGET
    host = args.host or DEFAULT_UI_HOST
    port = DEFAULT_UI_PORT if args.port is None else args.port
    try:
        settings = ConsoleSettings.from_files(
            target,
            tls=args.tls,
            root_ca=args.root_ca,
            client_cert=args.client_cert,
            client_key=args.client_key,
            server_name=args.server_name,
        )
    except OSError as exc:
        raise SkewlessError(f"cannot read {exc.filename}: {exc.strerror}") from None
    except ValueError as exc:  # a client certificate without its key, or the reverse
        raise SkewlessError(str(exc)) from None
    console = ConsoleServer(settings, sock=bind_console(host, port), access_log=args.verbose)
    print(f"skewless console on {console.url} (server {target})", flush=True)
    console.serve_forever()
    return EXIT_OK


def add_commands(commands: Any) -> None:
    """Adds `ui` to the `skewless` parser's subcommands."""
    p = commands.add_parser("ui", help="serve the web console for a running server")
    p.add_argument("--target", help="server HOST:PORT (default 127.0.0.1:6566)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, help="HTTP port (default 8566; 0 picks a free one)")
    p.add_argument("--tls", action="store_true", help="connect to the server with TLS")
    p.add_argument("--root-ca", type=Path, help="PEM roots that verify the server (implies --tls)")
    p.add_argument("--client-cert", type=Path, help="PEM client certificate, for mTLS")
    p.add_argument("--client-key", type=Path, help="PEM key of --client-cert")
    p.add_argument(
        "--server-name",
        help="name to verify in the server's certificate when it is not --target's host "
        "(implies --tls)",
    )
    p.set_defaults(func=_ui)
