"""Definitions and the registry: the Python definitions API, loading, validation, apply.

Feature repositories are usually YAML (see docs/definitions.md); Python code builds the
same objects from this package:

    >>> from skewless.registry import Entity, FeatureView, Feature, FileSource
"""

from skewless.registry.apply import (
    ApplyResult,
    apply_definitions,
    apply_repo,
    plan_definitions,
    plan_repo,
)
from skewless.registry.definitions import (
    DataSource,
    DeltaSource,
    Entity,
    Feature,
    FeatureLogging,
    FeatureService,
    FeatureView,
    FileSource,
    JoinKey,
    PushSource,
    RepoDefinitions,
    SqlSource,
)
from skewless.registry.policies import Policy

__all__ = [
    "ApplyResult",
    "DataSource",
    "DeltaSource",
    "Entity",
    "Feature",
    "FeatureLogging",
    "FeatureService",
    "FeatureView",
    "FileSource",
    "JoinKey",
    "Policy",
    "PushSource",
    "RepoDefinitions",
    "SqlSource",
    "apply_definitions",
    "apply_repo",
    "plan_definitions",
    "plan_repo",
]
