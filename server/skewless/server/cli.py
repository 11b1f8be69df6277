"""The `skewless` command line: apply definitions, serve them, discover features."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from skewless.offline.config import RepoConfig, load_repo_config
from skewless.offline.errors import SkewlessError
from skewless.server.materialize_cli import add_commands as add_materialize_commands
from skewless.v1 import registry_pb2

__all__ = ["main"]

_log = logging.getLogger("skewless")


def _config(args: argparse.Namespace) -> RepoConfig:
    config = load_repo_config(args.repo)
    changes: dict[str, Any] = {}  # RepoConfig field name -> new value
    if getattr(args, "port", None) is not None:
        changes["server_port"] = args.port
    if getattr(args, "host", None):
        changes["server_host"] = args.host
    if getattr(args, "redis_url", None):
        changes["redis_url"] = args.redis_url
    if getattr(args, "metrics_port", None) is not None:
        changes["metrics_port"] = args.metrics_port
    return dataclasses.replace(config, **changes)


def _cmd_apply(args: argparse.Namespace) -> int:
    from skewless.offline.apply import apply_repo

    result = apply_repo(args.repo)
    reg = result.registry
    counts = (
        f"{len(reg.entities)} entities, {len(reg.data_sources)} sources, "
        f"{len(reg.feature_views)} feature views, {len(reg.feature_services)} feature services"
    )
    if result.changed:
        print(f"applied project {reg.project!r} as registry version {reg.version}: {counts}")
    else:
        print(f"no changes: project {reg.project!r} stays at registry version {reg.version}")
    return 0


async def _serve(config: RepoConfig, grace: float) -> None:
    from skewless.server.app import create_server

    server, port = create_server(config)
    await server.start()
    print(
        f"skewless serving project {config.project!r} on {config.server_host}:{port} "
        f"(online store {config.redis_url})",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("shutting down: health NOT_SERVING, finishing in-flight calls", flush=True)
    await server.stop(grace)


def _cmd_serve(args: argparse.Namespace) -> int:
    from skewless.server.embedded_redis import online_store_config
    from skewless.server.metrics import start_metrics_server
    from skewless.server.workers import default_workers, serve_workers

    workers = args.workers if args.workers > 0 else default_workers()
    with online_store_config(_config(args)) as (config, embedded):
        if embedded is not None:
            print(f"started embedded redis-server on {embedded.url} (data in {embedded.data_dir})")
        try:
            if workers > 1:

                def announce(served: RepoConfig) -> None:
                    print(
                        f"skewless serving project {served.project!r} on "
                        f"{served.server_host}:{served.server_port} with {workers} workers "
                        f"(online store {served.redis_url})",
                        flush=True,
                    )

                return serve_workers(config, workers, grace=args.grace, on_ready=announce)
            if config.metrics_port:
                try:
                    start_metrics_server(config.metrics_port, host=config.server_host)
                except OSError as exc:
                    raise SkewlessError(
                        f"cannot serve metrics on port {config.metrics_port} ({exc.strerror}): "
                        "set server.metrics_port in skewless.yaml or pass --metrics-port 0"
                    ) from exc
            asyncio.run(_serve(config, args.grace))
        finally:
            if embedded is not None:
                print("stopping embedded redis-server")
    return 0


def _load_registry(args: argparse.Namespace) -> registry_pb2.Registry:
    from skewless.offline.registry_store import RegistryStore
    from skewless.server.registry_holder import RegistryHolder

    holder = RegistryHolder(RegistryStore(load_repo_config(args.repo).registry_path))
    holder.reload()
    return holder.current


def _cmd_list(args: argparse.Namespace) -> int:
    reg = _load_registry(args)
    kind = args.kind
    if kind == "entities":
        for e in reg.entities:
            keys = ", ".join(k.name for k in e.join_keys)
            print(f"{e.name}\tkeys: {keys}\t{e.description}")
    elif kind == "sources":
        for s in reg.data_sources:
            where = s.file.path if s.HasField("file") else ("sql" if s.HasField("sql") else "push")
            print(f"{s.name}\t{where}\t{s.description}")
    elif kind == "views":
        for v in reg.feature_views:
            feats = ", ".join(f.name for f in v.features)
            print(f"{v.name}\tentities: {', '.join(v.entities)}\tfeatures: {feats}")
    else:
        for fs in reg.feature_services:
            refs = ", ".join(
                p.feature_view + (":" + ",".join(p.features) if p.features else "")
                for p in fs.projections
            )
            print(f"{fs.name}\t{refs}\t{fs.description}")
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    reg = _load_registry(args)
    words = [w.lower() for w in args.words]
    found = 0
    for view in reg.feature_views:
        for feature in view.features:
            text = " ".join(
                [view.name, view.description, view.owner, feature.name, feature.description]
                + [f"{k} {v}" for k, v in {**view.tags, **feature.tags}.items()]
            ).lower()
            if all(w in text for w in words):
                found += 1
                print(f"{view.name}:{feature.name}\t{feature.description}")
    return 0 if found else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skewless", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("apply", help="validate the definitions and write the registry")
    p.add_argument("repo", nargs="?", default=".", help="feature repository (default: .)")
    p.set_defaults(func=_cmd_apply)

    p = sub.add_parser("serve", help="serve the repository over gRPC")
    p.add_argument("repo", nargs="?", default=".", help="feature repository (default: .)")
    p.add_argument("--host", help="address to bind (default from skewless.yaml: 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to bind (default 6566; 0 picks a free one)")
    p.add_argument("--redis-url", help="use this Redis instead of the configured/embedded one")
    p.add_argument("--metrics-port", type=int, help="Prometheus port (default 9464; 0 = off)")
    p.add_argument("--grace", type=float, default=5.0, help="seconds in-flight calls get on stop")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port (SO_REUSEPORT); 0 = one per core (default 1)",
    )
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("list", help="list registered objects")
    p.add_argument("kind", choices=["entities", "sources", "views", "services"])
    p.add_argument("repo", nargs="?", default=".", help="feature repository (default: .)")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("search", help="find features by words (name, description, owner, tags)")
    p.add_argument("words", nargs="+")
    p.add_argument("--repo", default=".", help="feature repository (default: .)")
    p.set_defaults(func=_cmd_search)

    add_materialize_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the process exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except SkewlessError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
