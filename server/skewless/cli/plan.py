"""`skewless plan`: what `skewless apply` would change, and whether it is safe.

The plan compares a repository's definitions with its stored registry and asks the
stores which views hold values (`has_stored_values`). It prints one line per object
(`+` added, `-` removed, `~` changed), each changed field with its old and new value,
and `BREAKING:` lines for changes `apply` refuses without `--allow-breaking`. When
`offline.engine` is `spark`, a `warning:` line names each view the Spark engine would
refuse at job start (`VIEW_NOT_KEY_LOCAL`) and its construct; warnings do not change
the exit code. Exit code 0
when nothing is breaking, 1 when something is (so CI can gate a definitions change), 2
for definitions with problems.

With `--target HOST:PORT` the plan is made by a running server instead
(`RegistryService.PlanRepository`): the definition files are sent, and the server
compares them with the registry it serves and its stores, as a CI job needs. Only the
repository's `features/` is read; `skewless.yaml` is not needed.
"""

from __future__ import annotations

import argparse
import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

from skewless.cli.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from skewless.core.config import RepoConfig, load_repo_config
from skewless.materialization.pipeline import engine_warnings
from skewless.materialization.view_state import has_stored_values
from skewless.registry.apply import plan_apply, plan_repo
from skewless.registry.registry_diff import (
    Action,
    FieldChange,
    ObjectChange,
    RegistryPlan,
)
from skewless.registry.repo_loader import definition_files
from skewless.v1 import registry_pb2, registry_service_pb2

__all__ = ["add_commands", "render_plan", "repo_plan"]

_SIGN = {Action.ADDED: "+", Action.REMOVED: "-", Action.CHANGED: "~"}
_VALUE_WIDTH = 60


def repo_plan(config: RepoConfig) -> RegistryPlan:
    """Validates a repository's definitions and compares them with its stored registry."""
    proposed = plan_repo(config.root)
    return plan_apply(config, proposed, has_values=partial(has_stored_values, config))


def _value(text: str) -> str:
    flat = " ".join(text.split())
    if not flat:
        return "(unset)"
    return flat if len(flat) <= _VALUE_WIDTH else flat[: _VALUE_WIDTH - 1] + "…"


def render_plan(plan: RegistryPlan, project: str) -> list[str]:
    """The lines `skewless plan` prints for a plan."""
    against = (
        f"registry version {plan.current_version}" if plan.current_version else "an empty registry"
    )
    lines = [f"plan for project {project!r} against {against}:"]
    if not plan.changes:
        lines.append("  no changes")
        return lines
    for change in plan.changes:
        lines.append(f"  {_SIGN[change.action]} {change.kind} {change.name!r}")
        for fc in change.fields:
            lines.append(f"      {fc.field}: {_value(fc.before)} -> {_value(fc.after)}")
        lines.extend(f"      BREAKING: {reason}" for reason in change.breaking)
        lines.extend(f"      note: {note}" for note in change.notes)
    counts = {action: sum(c.action == action for c in plan.changes) for action in Action}
    summary = ", ".join(f"{n} {action.value}" for action, n in counts.items() if n)
    breaking = len(plan.breaking)
    if breaking:
        summary += (
            f"; {breaking} breaking: `skewless apply` refuses {'it' if breaking == 1 else 'them'}"
            " unless --allow-breaking"
        )
    lines.append(summary)
    if plan.rematerialize:
        lines.append(
            "after applying, materialize again: skewless materialize-incremental --views "
            + " ".join(plan.rematerialize)
        )
    return lines


_KIND_NAMES = {
    registry_service_pb2.OBJECT_KIND_ENTITY: "entity",
    registry_service_pb2.OBJECT_KIND_DATA_SOURCE: "data source",
    registry_service_pb2.OBJECT_KIND_FEATURE_VIEW: "feature view",
    registry_service_pb2.OBJECT_KIND_FEATURE_SERVICE: "feature service",
}
_ACTION_NAMES = {
    registry_service_pb2.CHANGE_ACTION_ADDED: Action.ADDED,
    registry_service_pb2.CHANGE_ACTION_REMOVED: Action.REMOVED,
    registry_service_pb2.CHANGE_ACTION_CHANGED: Action.CHANGED,
}


def plan_of_response(response: registry_service_pb2.PlanRepositoryResponse) -> RegistryPlan:
    """A `PlanRepository` answer as a `RegistryPlan` (without the registry), to render."""
    return RegistryPlan(
        current_version=response.registry_version,
        changes=tuple(
            ObjectChange(
                kind=_KIND_NAMES.get(c.kind, "object"),
                name=c.name,
                action=_ACTION_NAMES.get(c.action, Action.CHANGED),
                fields=tuple(FieldChange(f.field, f.before, f.after) for f in c.field_changes),
                breaking=tuple(c.breaking_reasons),
                notes=tuple(c.notes),
            )
            for c in response.changes
        ),
        rematerialize=tuple(response.rematerialize_feature_views),
        registry=registry_pb2.Registry(),
    )


def _remote_plan(args: argparse.Namespace) -> tuple[RegistryPlan, str]:
    from skewless.client import Client

    root = Path(args.repo).resolve()
    files = {p.relative_to(root).as_posix(): p.read_text() for p in definition_files(root)}
    root_ca = args.root_ca.read_bytes() if args.root_ca is not None else None
    token = os.environ.get("SKEWLESS_TOKEN") or None
    with Client(args.target, tls=args.tls, root_certificates=root_ca, token=token) as client:
        response = client.plan_repository(files)
        project = client.get_registry_info().project if response.registry_version else "?"
    return plan_of_response(response), project


def _plan(args: argparse.Namespace) -> int:
    from skewless.client import SkewlessClientError

    warnings: list[str] = []
    if args.target:
        try:
            plan, project = _remote_plan(args)
        except SkewlessClientError as exc:
            code = exc.code.name if exc.code is not None else "an error"
            print(f"error: {args.target} answered {code}: {exc.message}", file=sys.stderr)
            return EXIT_USAGE
    else:
        config = load_repo_config(args.repo)
        plan, project = repo_plan(config), config.project
        warnings = engine_warnings(config, plan.registry)
    lines = render_plan(plan, project)
    lines.extend(f"warning: {w}" for w in warnings)
    print("\n".join(lines))
    return EXIT_FAILED if plan.breaking else EXIT_OK


def add_commands(commands: Any) -> None:
    """Adds `plan` to the `skewless` parser's subcommands."""
    p = commands.add_parser(
        "plan", help="show what apply would change and which changes are breaking"
    )
    p.add_argument("repo", nargs="?", default=".", help="feature repository (default: .)")
    p.add_argument(
        "--target",
        help="ask a running server (HOST:PORT) instead: it compares the repository's "
        "features/ with the registry it serves (a token, if any, from $SKEWLESS_TOKEN)",
    )
    p.add_argument("--tls", action="store_true", help="connect to --target with TLS")
    p.add_argument("--root-ca", type=Path, help="PEM roots that verify --target (implies --tls)")
    p.set_defaults(func=_plan)
