"""Resolving requested features against a registry into an ordered retrieval plan.

A request names its features either by feature service or by a list of references,
each `view:feature` (one feature) or `view` (every feature of the view, in declared
order). Resolution is pure (no I/O) and cheap, so historical retrieval and online
serving share it.

The plan lists each view once, in order of first mention, with the view's join keys
(the join keys of its entities, in entity order), its TTL and the requested features;
`FeaturePlan.features` keeps the request's order, which is the order of the output
columns. Output names are the feature name, or `view__feature` with full names.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from skewless.core.errors import InvalidArgumentError, NotFoundError
from skewless.v1 import registry_pb2

__all__ = [
    "FeaturePlan",
    "JoinKeySpec",
    "ResolvedFeature",
    "ViewPlan",
    "output_name",
    "parse_feature_ref",
    "resolve_feature_refs",
    "resolve_feature_service",
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

    """

    name: str
    join_keys: tuple[JoinKeySpec, ...]
    ttl_micros: int
    features: tuple[ResolvedFeature, ...]

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

    Raises:
        InvalidArgumentError: The reference is empty or not of either form.

    """
    if not isinstance(ref, str) or not ref.strip():
        raise InvalidArgumentError(
            "a feature reference is empty; use 'view:feature' or 'view'",
            field="features",
            reason="MALFORMED_FEATURE_REF",
            metadata={"ref": str(ref)},
        )
    parts = ref.split(":")
    if len(parts) > 2 or any(not p or p != p.strip() for p in parts):
        raise InvalidArgumentError(
            f"feature reference {ref!r} is malformed; use 'view:feature' or 'view'",
            field="features",
            reason="MALFORMED_FEATURE_REF",
            metadata={"ref": ref},
        )
    return parts[0], parts[1] if len(parts) == 2 else None


class _Index:
    """Name lookups over one registry, built once per resolution."""

    def __init__(self, registry: registry_pb2.Registry) -> None:
        self.views = {v.name: v for v in registry.feature_views}
        self.entities = {e.name: e for e in registry.entities}
        self.services = {s.name: s for s in registry.feature_services}

    def view(self, name: str) -> registry_pb2.FeatureView:
        view = self.views.get(name)
        if view is None:
            known = ", ".join(sorted(self.views)) or "none"
            raise NotFoundError(
                f"feature view {name!r} is not registered (known views: {known}); "
                "check the name or run `skewless apply`",
                reason="FEATURE_VIEW_NOT_FOUND",
                metadata={"feature_view": name},
            )
        return view

    def join_keys(self, view: registry_pb2.FeatureView) -> tuple[JoinKeySpec, ...]:
        keys: list[JoinKeySpec] = []
        for entity_name in view.entities:
            entity = self.entities.get(entity_name)
            if entity is None:
                raise NotFoundError(
                    f"feature view {view.name!r} uses entity {entity_name!r}, which is not "
                    "registered; fix the definitions and run `skewless apply`",
                    reason="ENTITY_NOT_FOUND",
                    metadata={"feature_view": view.name, "entity": entity_name},
                )
            keys.extend(JoinKeySpec(k.name, int(k.value_type)) for k in entity.join_keys)
        return tuple(keys)


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
                known = ", ".join(f.name for f in view.features) or "none"
                raise NotFoundError(
                    f"feature {feature_name!r} is not in feature view {view_name!r} "
                    f"(its features: {known})",
                    reason="FEATURE_NOT_FOUND",
                    metadata={"feature_view": view_name, "feature": feature_name},
                )
            chosen = match
        features.extend(
            ResolvedFeature(
                view=view_name,
                name=f.name,
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
    parsed = [parse_feature_ref(ref) for ref in refs]
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
        known = ", ".join(sorted(index.services)) or "none"
        raise NotFoundError(
            f"feature service {name!r} is not registered (known services: {known})",
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
