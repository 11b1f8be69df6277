"""The `skewless` command line: one parser, one exit-code policy.

Exit codes: 0 success; 1 the command ran but its work failed (a materialization job
failed, a search found nothing); 2 bad arguments or an unusable repository (the
message says which); 130 interrupted. Errors are printed as one `error: ...` line on
stderr, never as a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from skewless.cli import init, materialize, offline, plan, registry, serve, skew, ui
from skewless.cli.exit_codes import EXIT_INTERRUPTED, EXIT_USAGE
from skewless.core.errors import SkewlessError

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    """Returns the `skewless` argument parser with every command."""
    top = argparse.ArgumentParser(
        prog="skewless", description="skewless feature store: define, apply, materialize, serve."
    )
    top.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    init.add_commands(commands)
    registry.add_commands(commands)
    plan.add_commands(commands)
    serve.add_commands(commands)
    materialize.add_commands(commands)
    offline.add_commands(commands)
    skew.add_commands(commands)
    ui.add_commands(commands)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the process exit code."""
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except SkewlessError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:  # a bad argument value (a time, a count)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
