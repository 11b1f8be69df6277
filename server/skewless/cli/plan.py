"""`skewless plan`: what `skewless apply` would change, and whether it is safe.

The plan compares a repository's definitions with its stored registry and asks the
stores which views hold values (`has_stored_values`). It prints one line per object
(`+` added, `-` removed, `~` changed), each changed field with its old and new value,
and `BREAKING:` lines for changes `apply` refuses without `--allow-breaking`. Exit code 0
when nothing is breaking, 1 when something is (so CI can gate a definitions change), 2
for definitions with problems.
"""

from __future__ import annotations

import argparse
from functools import partial
from typing import Any

from skewless.cli.exit_codes import EXIT_FAILED, EXIT_OK
from skewless.core.config import RepoConfig, load_repo_config
from skewless.materialization.view_state import has_stored_values
from skewless.registry.apply import plan_apply, plan_repo
from skewless.registry.registry_diff import Action, RegistryPlan

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


def _plan(args: argparse.Namespace) -> int:
    config = load_repo_config(args.repo)
    plan = repo_plan(config)
    print("\n".join(render_plan(plan, config.project)))
    return EXIT_FAILED if plan.breaking else EXIT_OK


def add_commands(commands: Any) -> None:
    """Adds `plan` to the `skewless` parser's subcommands."""
    p = commands.add_parser(
        "plan", help="show what apply would change and which changes are breaking"
    )
    p.add_argument("repo", nargs="?", default=".", help="feature repository (default: .)")
    p.set_defaults(func=_plan)
