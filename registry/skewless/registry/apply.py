"""`skewless apply`: validate a feature repository and store its registry.

`plan_repo` reads and checks everything and returns the registry the repository
defines, writing nothing; `plan_apply` compares it with the stored registry
(`skewless.registry.registry_diff`); `apply_repo` does the same and then saves the
registry as the next version (a no-op when nothing changed), refusing breaking changes
unless `allow_breaking`. Invalid definitions raise one `DefinitionProblemsError` that
lists every problem with its file and object.
"""

from __future__ import annotations

from pathlib import Path

from skewless.core.config import RepoConfig, load_repo_config
from skewless.core.errors import FailedPreconditionError, listing
from skewless.registry.definitions import RepoDefinitions
from skewless.registry.registry_diff import HasValues, RegistryPlan, plan_changes
from skewless.registry.registry_store import ApplyResult, RegistryStore
from skewless.registry.repo_loader import load_definitions
from skewless.registry.validation import raise_for_problems, validate_definitions
from skewless.v1 import registry_pb2

__all__ = [
    "ApplyResult",
    "apply_definitions",
    "apply_repo",
    "plan_apply",
    "plan_definitions",
    "plan_repo",
]


def _no_values(view: str, generation: int) -> bool:
    return False


def plan_apply(
    config: RepoConfig,
    proposed: registry_pb2.Registry,
    *,
    has_values: HasValues | None = None,
) -> RegistryPlan:
    """Compares a validated registry with the stored one: what an apply would change.

    Args:
        config: The repository.
        proposed: The registry its definitions define (`plan_repo`, `plan_definitions`).
        has_values: Whether a view holds stored values under a generation (the
            materialization layer knows); None assumes no view holds any.

    """
    current = RegistryStore(config.storage).load()
    return plan_changes(current, proposed, has_values=has_values or _no_values)


def _save(config: RepoConfig, plan: RegistryPlan, *, allow_breaking: bool) -> ApplyResult:
    breaking = plan.breaking
    if breaking and not allow_breaking:
        lines = "\n".join(
            f"  - {change.kind} {change.name!r}: {reason}"
            for change in breaking
            for reason in change.breaking
        )
        raise FailedPreconditionError(
            f"{len(breaking)} breaking change(s); nothing was applied:\n{lines}\n"
            "Run `skewless plan` to see every change; apply with --allow-breaking to go ahead",
            reason="BREAKING_CHANGES",
            metadata={"objects": listing(c.name for c in breaking)},
        )
    result = RegistryStore(config.storage).save(plan.registry)
    return ApplyResult(registry=result.registry, changed=result.changed, plan=plan)


def plan_definitions(config: RepoConfig, definitions: RepoDefinitions) -> registry_pb2.Registry:
    """Validates definitions built in Python against a repository and returns their registry.

    Args:
        config: The repository's configuration (its root anchors paths and SQL).
        definitions: The definitions.

    Returns:
        The registry they define (version 0, no digest); nothing is written.

    Raises:
        DefinitionProblemsError: A definition is invalid; the message lists every problem.

    """
    problems = validate_definitions(definitions, root=config.root)
    raise_for_problems(problems, repo=str(config.root))
    return definitions.to_registry(config.project)


def apply_definitions(
    config: RepoConfig,
    definitions: RepoDefinitions,
    *,
    allow_breaking: bool = False,
    has_values: HasValues | None = None,
) -> ApplyResult:
    """Validates definitions built in Python and stores them as the repository's registry.

    Arguments `allow_breaking` and `has_values` are those of `apply_repo`.

    Returns:
        The stored registry and whether it changed (False: unchanged, nothing written).

    Raises:
        DefinitionProblemsError: A definition is invalid; nothing is written.
        FailedPreconditionError: A change is breaking (`BREAKING_CHANGES`); nothing is written.

    """
    registry = plan_definitions(config, definitions)
    plan = plan_apply(config, registry, has_values=has_values)
    return _save(config, plan, allow_breaking=allow_breaking)


def plan_repo(repo: str | Path) -> registry_pb2.Registry:
    """Reads and validates a feature repository without writing anything.

    Args:
        repo: The repository folder (holding `skewless.yaml` and `features/`).

    Returns:
        The registry the repository defines (version 0, no digest).

    Raises:
        DefinitionError: `skewless.yaml` is missing or invalid.
        DefinitionProblemsError: A definition is invalid; the message lists every problem.

    """
    config = load_repo_config(repo)
    loaded = load_definitions(config.root)
    problems = list(loaded.problems)
    problems += validate_definitions(loaded.definitions, root=config.root)
    raise_for_problems(problems, repo=str(config.root))
    return loaded.definitions.to_registry(config.project)


def apply_repo(
    repo: str | Path,
    *,
    allow_breaking: bool = False,
    has_values: HasValues | None = None,
) -> ApplyResult:
    """Validates a feature repository and stores its registry as the next version.

    Re-applying an unchanged repository writes nothing and keeps the version. Each
    view keeps its generation of stored values, or starts the next one when a feature
    type or its keys change (`skewless.registry.registry_diff`).

    Args:
        repo: The repository folder (holding `skewless.yaml` and `features/`).
        allow_breaking: Apply breaking changes (they are refused otherwise).
        has_values: Whether a view holds stored values under a generation; None
            assumes no view holds any (the CLI and the server ask the stores).

    Returns:
        The stored registry, whether it changed, and the plan that was applied.

    Raises:
        DefinitionError: `skewless.yaml` is missing or invalid.
        DefinitionProblemsError: A definition is invalid; nothing is written.
        FailedPreconditionError: A change is breaking (`BREAKING_CHANGES`); nothing is written.

    """
    config = load_repo_config(repo)
    registry = plan_repo(config.root)
    plan = plan_apply(config, registry, has_values=has_values)
    return _save(config, plan, allow_breaking=allow_breaking)
