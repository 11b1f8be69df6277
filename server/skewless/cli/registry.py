"""`skewless apply`, `skewless list` and `skewless search`."""

from __future__ import annotations

import argparse
from functools import partial
from typing import Any

from skewless.cli.exit_codes import EXIT_FAILED, EXIT_OK
from skewless.core.config import load_repo_config
from skewless.registry.registry_store import RegistryStore
from skewless.registry.search import search_features

__all__ = ["add_commands"]


def _apply(args: argparse.Namespace) -> int:
    from skewless.materialization.view_state import has_stored_values
    from skewless.registry.apply import apply_repo

    config = load_repo_config(args.repo)
    result = apply_repo(
        config.root,
        allow_breaking=args.allow_breaking,
        has_values=partial(has_stored_values, config),
    )
    reg = result.registry
    counts = (
        f"{len(reg.entities)} entities, {len(reg.data_sources)} sources, "
        f"{len(reg.feature_views)} feature views, {len(reg.feature_services)} feature services"
    )
    if result.changed:
        print(f"applied project {reg.project!r} as registry version {reg.version}: {counts}")
        plan = result.plan
        if plan is not None and plan.current_version:
            for change in plan.changes:
                print(f"  {change.action.value} {change.kind} {change.name!r}")
                if change.name not in plan.rematerialize:  # said once, below
                    for note in change.notes:
                        print(f"    {note}")
        if plan is not None and plan.rematerialize:
            print(
                "these views start empty (NOT_FOUND) until materialized again: "
                f"skewless materialize-incremental --views {' '.join(plan.rematerialize)}"
            )
    else:
        print(f"no changes: project {reg.project!r} stays at registry version {reg.version}")
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    reg = RegistryStore(load_repo_config(args.repo).storage).require()
    kind = args.kind
    if kind == "entities":
        for e in reg.entities:
            keys = ", ".join(k.name for k in e.join_keys)
            print(f"{e.name}\tkeys: {keys}\t{e.description}")
    elif kind == "sources":
        for s in reg.data_sources:
            where = (
                s.file.path
                if s.HasField("file")
                else f"delta {s.delta.path}"
                if s.HasField("delta")
                else ("sql" if s.HasField("sql") else "push")
            )
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
    return EXIT_OK


def _search(args: argparse.Namespace) -> int:
    reg = RegistryStore(load_repo_config(args.repo).storage).require()
    hits = search_features(reg, args.words)
    for hit in hits:
        print(f"{hit.reference}\t{hit.feature.description}")
    return EXIT_OK if hits else EXIT_FAILED


def add_commands(commands: Any) -> None:
    """Adds `apply`, `list` and `search` to the `skewless` parser's subcommands."""
    p = commands.add_parser("apply", help="validate the definitions and write the registry")
    p.add_argument("repo", nargs="?", default=".", help="feature repository (default: .)")
    p.add_argument(
        "--allow-breaking",
        action="store_true",
        help="apply breaking changes too (see `skewless plan`); views whose feature types "
        "or keys change start empty and must be materialized again",
    )
    p.set_defaults(func=_apply)

    p = commands.add_parser("list", help="list registered objects")
    p.add_argument("kind", choices=["entities", "sources", "views", "services"])
    p.add_argument("repo", nargs="?", default=".", help="feature repository (default: .)")
    p.set_defaults(func=_list)

    p = commands.add_parser(
        "search", help="find features by words (name, description, owner, tags)"
    )
    p.add_argument("words", nargs="+")
    p.add_argument("--repo", default=".", help="feature repository (default: .)")
    p.set_defaults(func=_search)
