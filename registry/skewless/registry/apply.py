"""`skewless apply`: validate a feature repository and store its registry.

`plan_repo` reads and checks everything and returns the registry the repository
defines, writing nothing; `apply_repo` does the same and then saves the registry as the
next version (a no-op when nothing changed). Invalid definitions raise one
`DefinitionProblemsError` that lists every problem with its file and object.
"""

from __future__ import annotations

from pathlib import Path

from skewless.core.config import RepoConfig, load_repo_config
from skewless.registry.definitions import RepoDefinitions
from skewless.registry.registry_store import ApplyResult, RegistryStore
from skewless.registry.repo_loader import load_definitions
from skewless.registry.validation import raise_for_problems, validate_definitions
from skewless.v1 import registry_pb2

__all__ = ["ApplyResult", "apply_definitions", "apply_repo", "plan_definitions", "plan_repo"]


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


def apply_definitions(config: RepoConfig, definitions: RepoDefinitions) -> ApplyResult:
    """Validates definitions built in Python and stores them as the repository's registry.

    Returns:
        The stored registry and whether it changed (False: unchanged, nothing written).

    Raises:
        DefinitionProblemsError: A definition is invalid; nothing is written.

    """
    registry = plan_definitions(config, definitions)
    return RegistryStore(config.registry_path).save(registry)


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


def apply_repo(repo: str | Path) -> ApplyResult:
    """Validates a feature repository and stores its registry as the next version.

    Re-applying an unchanged repository writes nothing and keeps the version.

    Args:
        repo: The repository folder (holding `skewless.yaml` and `features/`).

    Returns:
        The stored registry and whether it changed.

    Raises:
        DefinitionError: `skewless.yaml` is missing or invalid.
        DefinitionProblemsError: A definition is invalid; nothing is written.

    """
    config = load_repo_config(repo)
    registry = plan_repo(config.root)
    return RegistryStore(config.registry_path).save(registry)
