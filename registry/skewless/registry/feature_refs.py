"""Resolving names against a registry: the one resolver of views, features and keys.

Two questions, one index (`_Index`), so that every path resolves and refuses alike:

* *which features does a request want?* A request names its features either by feature
  service or by a list of references, each `view:feature` (one feature) or `view`
  (every feature of the view, in declared order): `resolve_feature_service` and
  `resolve_feature_refs` return a `FeaturePlan`, shared by online serving and
  historical retrieval;
* *what does writing a view need?* `resolve_view` returns a `ResolvedView` (the view,
  its source, its typed join keys and features, its history schema), shared by
  materialization and pushes.

Resolution is pure (no I/O) and cheap. A view that names a source or entity the
registry lacks, or a name that is not an identifier, means the registry file was not
written by `apply`: FAILED_PRECONDITION `REGISTRY_INCONSISTENT`.

The plan lists each view once, in order of first mention, with the view's join keys
(the join keys of its entities, in entity order), its TTL and the requested features;
`FeaturePlan.features` keeps the request's order, which is the order of the output
columns. Output names are the feature name, or `view__feature` with full names.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pyarrow as pa

from skewless.core.errors import (
    DefinitionError,
    InvalidArgumentError,
    NotFoundError,
    listing,
    quoted,
)
from skewless.core.names import (
    CREATED_TIMESTAMP,
    EVENT_TIMESTAMP,
    check_identifier,
    storage_name,
)
from skewless.core.types import arrow_type
from skewless.v1 import registry_pb2

__all__ = [
    "FeaturePlan",
    "FeatureSpec",
    "JoinKeySpec",
    "ResolvedFeature",
    "ResolvedView",
    "ViewPlan",
    "output_name",
    "parse_feature_ref",
    "resolve_feature_refs",
    "resolve_feature_service",
    "resolve_view",
]

_FULL_NAME_SEPARATOR = "__"


@dataclass(frozen=True)
class JoinKeySpec:
    """One join key of a feature view.

    Attributes:
        name: The key column name (in entity rows and in the view's history).
        value_type: The key's `skewless.v1.ValueType`.

    """

    name: str
    value_type: int


@dataclass(frozen=True)
class FeatureSpec:
    """One declared feature of a feature view.

    Attributes:
        name: The feature's name (its column in the view's history).
        value_type: Its declared `skewless.v1.ValueType`.

    """

    name: str
    value_type: int


@dataclass(frozen=True)
class ResolvedView:
    """What writing one feature view (materialization, push) needs from the registry.

    Attributes:
        view: The feature view definition.
        source: Its data source definition.
        join_keys: The view's join keys, in entity order.
        features: The view's features, in declaration order.

    """

    view: registry_pb2.FeatureView
    source: registry_pb2.DataSource
    join_keys: tuple[JoinKeySpec, ...]
    features: tuple[FeatureSpec, ...]

    @property
    def name(self) -> str:
        """The view's name."""
        return str(self.view.name)

    @property
    def storage_name(self) -> str:
        """Where the view's current generation of values is stored (`storage_name`)."""
        return storage_name(self.view.name, self.view.generation)

    @property
    def timestamp_field(self) -> str:
        """The source column holding event times."""
        return str(self.source.timestamp_field)

    @property
    def created_timestamp_field(self) -> str | None:
        """The source column holding created times, if any."""
        return str(self.source.created_timestamp_field) or None

    @property
    def key_names(self) -> tuple[str, ...]:
        """The join key column names."""
        return tuple(k.name for k in self.join_keys)

    @property
    def history_schema(self) -> pa.Schema:
        """The Arrow schema of this view's history rows."""
        fields = [
            pa.field(k.name, arrow_type(k.value_type), nullable=False) for k in self.join_keys
        ]
        fields.append(pa.field(EVENT_TIMESTAMP, pa.timestamp("us", tz="UTC"), nullable=False))
        fields.append(pa.field(CREATED_TIMESTAMP, pa.timestamp("us", tz="UTC")))
        fields.extend(pa.field(f.name, arrow_type(f.value_type)) for f in self.features)
        return pa.schema(fields)


@dataclass(frozen=True)
class ResolvedFeature:
    """One requested feature.

    Attributes:
        view: The feature view's name.
        name: The feature's name within its view.
        value_type: The feature's `skewless.v1.ValueType`.
        output_name: The column (or response field) name it is returned under.

    """

    view: str
    name: str
    value_type: int
    output_name: str


@dataclass(frozen=True)
class ViewPlan:
    """The part of a plan that reads one feature view.

    Attributes:
        name: The feature view's name.
        join_keys: The view's join keys, in the order of its entities and their keys.
        ttl_micros: The view's TTL in microseconds; 0 means unlimited.
        features: The requested features of this view, in request order.
        storage_name: Where its current generation of values is stored (`storage_name`).

    """

    name: str
    join_keys: tuple[JoinKeySpec, ...]
    ttl_micros: int
    features: tuple[ResolvedFeature, ...]
    storage_name: str = ""

    def __post_init__(self) -> None:
        if not self.storage_name:
            object.__setattr__(self, "storage_name", self.name)

    @property
    def join_key_names(self) -> tuple[str, ...]:
        """The join key column names."""
        return tuple(k.name for k in self.join_keys)


@dataclass(frozen=True)
class FeaturePlan:
    """Every view and feature a request needs.

    Attributes:
        views: One entry per view, in order of first mention.
        features: Every requested feature, in request (output column) order.

    """

    views: tuple[ViewPlan, ...]
    features: tuple[ResolvedFeature, ...]

    @property
    def join_keys(self) -> tuple[JoinKeySpec, ...]:
        """The union of the views' join keys, in order of first mention."""
        seen: dict[str, JoinKeySpec] = {}
        for view in self.views:
            for key in view.join_keys:
                seen.setdefault(key.name, key)
        return tuple(seen.values())

    @property
    def output_names(self) -> tuple[str, ...]:
        """The output column names, in order."""
        return tuple(f.output_name for f in self.features)


def output_name(view: str, feature: str, *, full_feature_names: bool) -> str:
    """Returns the output name of a feature: `feature` or `view__feature`."""
    return f"{view}{_FULL_NAME_SEPARATOR}{feature}" if full_feature_names else feature


def parse_feature_ref(ref: str) -> tuple[str, str | None]:
    """Splits a reference `view:feature` or `view` into (view, feature or None).

    The one parser of feature references, for requests and definitions alike: no
    surrounding spaces, no empty part, at most one `:`.

    Raises:
        ValueError: The reference is empty or not of either form (the message says why).

    """
    if not isinstance(ref, str) or not ref.strip():
        raise ValueError("a feature reference is empty; use 'view:feature' or 'view'")
    parts = ref.split(":")
    if len(parts) > 2 or any(not p or p != p.strip() for p in parts):
        raise ValueError(
            f"feature reference {quoted(ref)} is malformed; use 'view:feature' or 'view'"
        )
    return parts[0], parts[1] if len(parts) == 2 else None


def _request_ref(ref: str) -> tuple[str, str | None]:
    try:
        return parse_feature_ref(ref)
    except ValueError as exc:
        raise InvalidArgumentError(
            str(exc),
            field="features",
            reason="MALFORMED_FEATURE_REF",
            metadata={"ref": str(ref)},
        ) from None


def _inconsistent(message: str, **metadata: str) -> DefinitionError:
    return DefinitionError(
        f"{message}; the registry was not written by `skewless apply`: fix the definitions "
        "and apply them",
        reason="REGISTRY_INCONSISTENT",
        metadata=metadata,
    )


class _Index:
    """Name lookups over one registry, built once per resolution."""

    def __init__(self, registry: registry_pb2.Registry) -> None:
        self.views = {v.name: v for v in registry.feature_views}
        self.entities = {e.name: e for e in registry.entities}
        self.services = {s.name: s for s in registry.feature_services}
        self.sources = {s.name: s for s in registry.data_sources}

    def view(self, name: str) -> registry_pb2.FeatureView:
        view = self.views.get(name)
        if view is None:
            raise NotFoundError(
                f"feature view {quoted(name)} is not registered (known views: "
                f"{listing(sorted(self.views))}); check the name or run `skewless apply`",
                reason="FEATURE_VIEW_NOT_FOUND",
                metadata={"feature_view": name},
            )
        return view

    def source(self, view: registry_pb2.FeatureView) -> registry_pb2.DataSource:
        source = self.sources.get(view.source)
        if source is None:
            raise _inconsistent(
                f"feature view {view.name!r} reads source {view.source!r}, which is not registered",
                feature_view=view.name,
                source=view.source,
            )
        return source

    def join_keys(self, view: registry_pb2.FeatureView) -> tuple[JoinKeySpec, ...]:
        keys: list[JoinKeySpec] = []
        for entity_name in view.entities:
            entity = self.entities.get(entity_name)
            if entity is None:
                raise _inconsistent(
                    f"feature view {view.name!r} uses entity {entity_name!r}, which is not "
                    "registered",
                    feature_view=view.name,
                    entity=entity_name,
                )
            keys.extend(
                JoinKeySpec(check_identifier(k.name, "join key"), int(k.value_type))
                for k in entity.join_keys
            )
        return tuple(keys)

    def features(self, view: registry_pb2.FeatureView) -> tuple[FeatureSpec, ...]:
        return tuple(
            FeatureSpec(check_identifier(f.name, "feature"), int(f.value_type))
            for f in view.features
        )


def _build(
    index: _Index,
    wanted: Iterable[tuple[str, str | None]],
    *,
    full_feature_names: bool,
) -> FeaturePlan:
    features: list[ResolvedFeature] = []
    for view_name, feature_name in wanted:
        view = index.view(view_name)
        if feature_name is None:
            chosen = list(view.features)
        else:
            match = [f for f in view.features if f.name == feature_name]
            if not match:
                raise NotFoundError(
                    f"feature {quoted(feature_name)} is not in feature view {quoted(view_name)} "
                    f"(its features: {listing(f.name for f in view.features)})",
                    reason="FEATURE_NOT_FOUND",
                    metadata={"feature_view": view_name, "feature": feature_name},
                )
            chosen = match
        features.extend(
            ResolvedFeature(
                view=view_name,
                name=check_identifier(f.name, "feature"),
                value_type=int(f.value_type),
                output_name=output_name(view_name, f.name, full_feature_names=full_feature_names),
            )
            for f in chosen
        )
    if not features:
        raise InvalidArgumentError(
            "no features requested; name a feature service or at least one 'view:feature'",
            field="features",
            reason="NO_FEATURES",
        )
    seen: dict[str, ResolvedFeature] = {}
    for feature in features:
        other = seen.get(feature.output_name)
        if other is not None:
            same = (other.view, other.name) == (feature.view, feature.name)
            hint = (
                "remove the repeated reference"
                if same
                else "set full_feature_names to name columns 'view__feature'"
            )
            raise InvalidArgumentError(
                f"two requested features would both be returned as {feature.output_name!r} "
                f"({other.view}:{other.name} and {feature.view}:{feature.name}); {hint}",
                field="full_feature_names" if not same else "features",
                reason="DUPLICATE_OUTPUT_NAME",
                metadata={
                    "output_name": feature.output_name,
                    "first": f"{other.view}:{other.name}",
                    "second": f"{feature.view}:{feature.name}",
                },
            )
        seen[feature.output_name] = feature
    order: dict[str, list[ResolvedFeature]] = {}
    for feature in features:
        order.setdefault(feature.view, []).append(feature)
    views = tuple(
        ViewPlan(
            name=name,
            join_keys=index.join_keys(index.views[name]),
            ttl_micros=_ttl_micros(index.views[name]),
            features=tuple(group),
            storage_name=storage_name(name, index.views[name].generation),
        )
        for name, group in order.items()
    )
    return FeaturePlan(views=views, features=tuple(features))


def _ttl_micros(view: registry_pb2.FeatureView) -> int:
    if not view.HasField("ttl"):
        return 0
    return max(0, view.ttl.seconds * 1_000_000 + view.ttl.nanos // 1_000)


def resolve_feature_refs(
    registry: registry_pb2.Registry, refs: Sequence[str], *, full_feature_names: bool = False
) -> FeaturePlan:
    """Resolves `view:feature` / `view` references into a plan.

    Args:
        registry: The registry to resolve against.
        refs: The references, in the order the output columns should have.
        full_feature_names: Name outputs `view__feature` instead of `feature`.

    Returns:
        The plan.

    Raises:
        InvalidArgumentError: A reference is malformed, none is given, or two features
            share an output name.
        NotFoundError: A view, feature or entity is not registered.

    """
    parsed = [_request_ref(ref) for ref in refs]
    return _build(_Index(registry), parsed, full_feature_names=full_feature_names)


def resolve_feature_service(
    registry: registry_pb2.Registry, name: str, *, full_feature_names: bool = False
) -> FeaturePlan:
    """Resolves a feature service into a plan (a projection with no features means all).

    Raises:
        InvalidArgumentError: The name is empty, or two features share an output name.
        NotFoundError: The service, or a view, feature or entity it uses, is not registered.

    """
    if not name:
        raise InvalidArgumentError(
            "the feature service name is empty", field="feature_service", reason="EMPTY_NAME"
        )
    index = _Index(registry)
    service = index.services.get(name)
    if service is None:
        raise NotFoundError(
            f"feature service {quoted(name)} is not registered (known services: "
            f"{listing(sorted(index.services))})",
            reason="FEATURE_SERVICE_NOT_FOUND",
            metadata={"feature_service": name},
        )
    wanted: list[tuple[str, str | None]] = []
    for projection in service.projections:
        if projection.features:
            wanted.extend((projection.feature_view, f) for f in projection.features)
        else:
            wanted.append((projection.feature_view, None))
    return _build(index, wanted, full_feature_names=full_feature_names)


def resolve_view(registry: registry_pb2.Registry, name: str) -> ResolvedView:
    """Resolves a feature view for writing: its source, typed join keys and features.

    Raises:
        NotFoundError: No such view.
        DefinitionError: The view names a source or entity the registry lacks, or a name
            that is not an identifier (`REGISTRY_INCONSISTENT`, `INVALID_IDENTIFIER`).

    """
    index = _Index(registry)
    view = index.view(name)
    source = index.source(view)
    check_identifier(source.timestamp_field, "timestamp field")
    if source.created_timestamp_field:
        check_identifier(source.created_timestamp_field, "created timestamp field")
    return ResolvedView(
        view=view,
        source=source,
        join_keys=index.join_keys(view),
        features=index.features(view),
    )
