"""`skewless migrate-offline`, `skewless compact` and `skewless vacuum`: offline store upkeep.

Each is a Delta operation on the views' tables (each view's current generation), safe
while a server serves them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from skewless.cli.exit_codes import EXIT_OK
from skewless.core.config import RepoConfig, load_repo_config
from skewless.core.errors import NotFoundError, listing
from skewless.core.names import storage_name
from skewless.offline.maintenance import compact, offline_views, vacuum
from skewless.offline.migrate import migrate_offline
from skewless.registry.definitions import parse_duration
from skewless.registry.feature_refs import resolve_view
from skewless.registry.registry_store import RegistryStore, registry_not_applied
from skewless.v1 import registry_pb2

__all__ = ["add_commands"]


def _migrate_command(repo: str) -> int:
    """`skewless migrate-offline [--repo R]`: converts old-layout views to Delta tables."""
    config = load_repo_config(repo)
    done = migrate_offline(config)
    if not done:
        print("the offline store is already in the Delta layout")
    for item in done:
        print(f"{item.view}: {item.files} file(s), {item.rows:,} row(s) -> Delta table version 0+")
    return EXIT_OK


def _tables(
    config: RepoConfig, registry: registry_pb2.Registry, wanted: Sequence[str] | None
) -> list[tuple[registry_pb2.FeatureView, str]]:
    """(view, storage name of its current generation) of each view with an offline table.

    Only the current generation's table: the tables of earlier generations are never read
    (nor compacted, vacuumed or swept) again.
    """
    have = set(offline_views(config))
    current = [
        (v, storage_name(v.name, v.generation))
        for v in sorted(registry.feature_views, key=lambda v: v.name)
    ]
    tables = [(v, name) for v, name in current if name in have]
    if not wanted:
        return tables
    names = [v.name for v, _ in tables]
    unknown = [v for v in wanted if v not in names]
    if unknown:
        raise NotFoundError(
            f"no offline table for {listing(unknown)}; views with one: {listing(names)}",
            reason="FEATURE_VIEW_NOT_FOUND",
            metadata={"feature_view": unknown[0]},
        )
    return [t for t in tables if t[0].name in wanted]


def _registry(config: RepoConfig) -> registry_pb2.Registry:
    registry = RegistryStore(config.storage).load()
    if registry is None:
        raise registry_not_applied()
    return registry


def _compact_command(repo: str, wanted: Sequence[str] | None) -> int:
    """`skewless compact [--views V ...]`: pushed files rewritten in (time, key) order."""
    config = load_repo_config(repo)
    registry = _registry(config)
    for view, table in _tables(config, registry, wanted):
        keys = [k.name for k in resolve_view(registry, view.name).join_keys]
        result = compact(config, table, keys)
        print(
            f"{view.name}: {result.files_removed} pushed file(s) rewritten as "
            f"{result.files_added} (version {result.version})"
        )
    return EXIT_OK


def _vacuum_command(repo: str, retain: str, wanted: Sequence[str] | None) -> int:
    """`skewless vacuum --retain D [--views V ...]`: deletes files older versions held."""
    config = load_repo_config(repo)
    keep = parse_duration(retain)
    for view, table in _tables(config, _registry(config), wanted):
        result = vacuum(config, table, keep)
        print(f"{view.name}: {result.files_removed} file(s) deleted")
    return EXIT_OK


def add_commands(commands: Any) -> None:
    """Adds the offline store's upkeep commands to the parser's subcommands."""
    p = commands.add_parser(
        "migrate-offline",
        help="convert an offline store of the old manifest layout to Delta tables, in place",
    )
    p.add_argument("--repo", default=".", help="feature repository folder (default: .)")
    p.set_defaults(func=lambda a: _migrate_command(a.repo))
    p = commands.add_parser(
        "compact", help="rewrite pushed offline files in (event time, key) order, per day"
    )
    p.add_argument("--repo", default=".", help="feature repository folder (default: .)")
    p.add_argument("--views", nargs="+", default=None, help="only these feature views")
    p.set_defaults(func=lambda a: _compact_command(a.repo, a.views))
    p = commands.add_parser(
        "vacuum",
        help="delete offline files that no version newer than the retention references",
    )
    p.add_argument(
        "--retain",
        default="7d",
        help="keep what versions of this age need (`7d`, `12h`; default 7d): older "
        "pinned versions can no longer be read",
    )
    p.add_argument("--repo", default=".", help="feature repository folder (default: .)")
    p.add_argument("--views", nargs="+", default=None, help="only these feature views")
    p.set_defaults(func=lambda a: _vacuum_command(a.repo, a.retain, a.views))
