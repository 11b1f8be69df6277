"""`skewless migrate-offline`, `skewless compact` and `skewless vacuum`: offline store upkeep.

Each is a Delta operation on the views' tables, safe while a server serves them.
"""

from __future__ import annotations

from typing import Any

from skewless.cli.exit_codes import EXIT_OK
from skewless.core.config import load_repo_config
from skewless.offline.migrate import migrate_offline

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


def add_commands(commands: Any) -> None:
    """Adds the offline store's upkeep commands to the parser's subcommands."""
    p = commands.add_parser(
        "migrate-offline",
        help="convert an offline store of the old manifest layout to Delta tables, in place",
    )
    p.add_argument("--repo", default=".", help="feature repository folder (default: .)")
    p.set_defaults(func=lambda a: _migrate_command(a.repo))
