"""Lookup plans: the registry compiled, once per version, into what a read needs.

A `LookupPlan` says which Redis hashes to read (one `ViewLookup` per feature view:
key prefix, join keys and the hash fields to fetch) and how to lay the answer out (one
`OutputFeature` per requested feature, in request order). `PlanCatalog` compiles a plan
for every feature service when a registry version loads, and caches plans for explicit
feature lists by the list itself, so that serving a request never walks the registry.

Feature references are resolved by `skewless.registry.feature_refs`, the resolution
historical retrieval uses, so both paths accept and reject the same requests.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from skewless.client._wire import field_tag, length_delimited
from skewless.core.errors import (
    FailedPreconditionError,
    ResourceExhaustedError,
    SkewlessError,
)
from skewless.online.layout import EVENT_TIME_FIELD, view_key_prefix
from skewless.online.resp import bulk
from skewless.registry.feature_refs import (
    FeaturePlan,
    resolve_feature_refs,
    resolve_feature_service,
)
from skewless.registry.registry_store import registry_not_applied
from skewless.v1 import online_service_pb2, registry_pb2, types_pb2

__all__ = [
    "MAX_FEATURE_REFS",
    "KeySet",
    "LookupPlan",
    "OutputFeature",
    "PlanCatalog",
    "ViewLookup",
    "compile_plan",
]

#: Most feature references one request may name.
MAX_FEATURE_REFS = 1000
#: Key suffixes shorter than this are packed from `ViewLookup.resp_starts` (an INT64
#: key's is at most 22 bytes).
RESP_STARTS = 64
_LIST_CACHE_SIZE = 512
_FIXED_WIDTH_TYPES = frozenset(
    {
        types_pb2.VALUE_TYPE_FLOAT32,
        types_pb2.VALUE_TYPE_FLOAT64,
        types_pb2.VALUE_TYPE_BOOL,
    }
)


@dataclass(frozen=True)
class KeySet:
    """The join keys, with their declared types, that key one or more views.

    Attributes:
        names: Join key names, in the order they form the entity key.
        value_types: The declared `ValueType` of each join key.

    """

    names: tuple[str, ...]
    value_types: tuple[int, ...]


@dataclass(frozen=True)
class ViewLookup:
    """What to read for one feature view: one HMGET per entity row.

    Attributes:
        view: The feature view's name.
        key_prefix: `<project>:<view>:`, the start of every key of the view.
        key_set: Index into `LookupPlan.key_sets` of the keys that identify a row.
        fields: Hash fields to fetch: `_ts` first, then the features.
        ttl_micros: The view's TTL in microseconds; 0 means values never go stale.
        resp_head: The RESP array header and command name of the view's HMGET.
        resp_fields: The RESP encoding of `fields`, sent after each key.
        resp_starts: By key suffix length (below `RESP_STARTS`), everything of the
            view's HMGET before the suffix: `resp_head`, the key's bulk length and
            `key_prefix`; the suffix, CRLF and `resp_fields` follow.

    """

    view: str
    key_prefix: bytes
    key_set: int
    fields: tuple[bytes, ...]
    ttl_micros: int
    resp_head: bytes
    resp_fields: bytes
    resp_starts: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class OutputFeature:
    """One feature vector of the response.

    Attributes:
        lookup: Index into `LookupPlan.lookups` of the view holding the feature.
        column: Index of the feature in that lookup's `fields` (1 or more).
        name: The name it is returned under (`feature` or `view__feature`).
        name_field: `FeatureVector.name` as wire bytes (tag, length, UTF-8 name).
        fixed_width: Whether the type serializes to a fixed number of bytes (floats,
            doubles, booleans), so that a column of values may be framed in one join.

    """

    lookup: int
    column: int
    name: str
    name_field: bytes
    fixed_width: bool = False


@dataclass(frozen=True)
class LookupPlan:
    """A compiled request shape: the reads to issue and the response layout.

    Attributes:
        key_sets: The distinct join key sets of the views read.
        lookups: One entry per feature view read.
        outputs: One entry per feature returned, in response order.
        join_keys: Every join key the request must provide, with its type.
        int64_keys: When every key set is one INT64 join key, those join keys in
            `key_sets` order (the common case, encoded without the general checks).
        single_layout: `outputs` flattened for one-row responses: per feature, its
            lookup, column, `name_field` and the size of `name_field`.

    """

    key_sets: tuple[KeySet, ...]
    lookups: tuple[ViewLookup, ...]
    outputs: tuple[OutputFeature, ...]
    join_keys: dict[str, int]
    int64_keys: tuple[str, ...] | None = None
    single_layout: tuple[tuple[int, int, bytes, int], ...] = ()


_NAME_TAG = field_tag(online_service_pb2.FeatureVector, "name")


def compile_plan(
    project: str,
    feature_plan: FeaturePlan,
    views: Mapping[str, registry_pb2.FeatureView],
) -> LookupPlan:
    """Turns a resolved `FeaturePlan` into the reads and layout of a `LookupPlan`.

    Raises:
        FailedPreconditionError: A view is not served online (`online: false`).

    """
    key_sets: list[KeySet] = []
    lookups: list[ViewLookup] = []
    position: dict[str, int] = {}
    join_keys: dict[str, int] = {}
    for view in feature_plan.views:
        definition = views.get(view.name)
        if definition is not None and not definition.online:
            raise FailedPreconditionError(
                f"feature view {view.name!r} is not served online (online: false); "
                "set online: true in its definition and materialize it",
                reason="FEATURE_VIEW_NOT_ONLINE",
                metadata={"feature_view": view.name},
            )
        key_set = KeySet(
            names=tuple(k.name for k in view.join_keys),
            value_types=tuple(k.value_type for k in view.join_keys),
        )
        if key_set not in key_sets:
            key_sets.append(key_set)
        join_keys.update(zip(key_set.names, key_set.value_types, strict=True))
        fields = [EVENT_TIME_FIELD]
        for feature in view.features:
            if feature.name.encode() not in fields:
                fields.append(feature.name.encode())
        position[view.name] = len(lookups)
        head = b"*%d\r\n%s" % (len(fields) + 2, bulk(b"HMGET"))
        prefix = view_key_prefix(project, view.storage_name)
        lookups.append(
            ViewLookup(
                view=view.name,
                key_prefix=prefix,
                key_set=key_sets.index(key_set),
                fields=tuple(fields),
                ttl_micros=view.ttl_micros,
                resp_head=head,
                resp_fields=b"".join(bulk(f) for f in fields),
                resp_starts=tuple(
                    b"%s$%d\r\n%s" % (head, len(prefix) + size, prefix)
                    for size in range(RESP_STARTS)
                ),
            )
        )
    outputs = tuple(
        OutputFeature(
            lookup=position[f.view],
            column=lookups[position[f.view]].fields.index(f.name.encode()),
            name=f.output_name,
            name_field=length_delimited(_NAME_TAG, f.output_name.encode()),
            fixed_width=f.value_type in _FIXED_WIDTH_TYPES,
        )
        for f in feature_plan.features
    )
    int64_keys = tuple(k.names[0] for k in key_sets)
    simple = all(k.value_types == (types_pb2.VALUE_TYPE_INT64,) for k in key_sets)
    return LookupPlan(
        key_sets=tuple(key_sets),
        lookups=tuple(lookups),
        outputs=outputs,
        join_keys=join_keys,
        int64_keys=int64_keys if simple and key_sets else None,
        single_layout=tuple((f.lookup, f.column, f.name_field, len(f.name_field)) for f in outputs),
    )


class PlanCatalog:
    """The lookup plans of the registry version being served.

    Call `load` with every new registry version (it is a `RegistryHolder` listener):
    it compiles every feature service, with short and with full names. `for_service`
    then answers without touching the registry; `for_features` compiles a feature list
    the first time it is seen and caches the plan by the list.
    """

    def __init__(self, project: str) -> None:
        """Creates an empty catalog for a project (nothing is served until `load`)."""
        self.project = project
        self._registry: registry_pb2.Registry | None = None
        self._views: dict[str, registry_pb2.FeatureView] = {}
        self._services: dict[tuple[str, bool], LookupPlan | SkewlessError] = {}
        self._lists: OrderedDict[tuple[tuple[str, ...], bool], LookupPlan] = OrderedDict()
        self.version = 0

    def load(self, registry: registry_pb2.Registry) -> None:
        """Compiles every feature service of a registry version and drops cached lists."""
        views = {v.name: v for v in registry.feature_views}
        services: dict[tuple[str, bool], LookupPlan | SkewlessError] = {}
        for service in registry.feature_services:
            for full in (False, True):
                try:
                    resolved = resolve_feature_service(
                        registry, service.name, full_feature_names=full
                    )
                    services[(service.name, full)] = compile_plan(self.project, resolved, views)
                except SkewlessError as exc:  # answered when the service is requested
                    services[(service.name, full)] = exc
        self._registry, self._views, self._services = registry, views, services
        self._lists = OrderedDict()
        self.version = registry.version

    def _require_registry(self) -> registry_pb2.Registry:
        if self._registry is None:
            raise registry_not_applied()
        return self._registry

    def for_service(self, name: str, *, full_feature_names: bool = False) -> LookupPlan:
        """Returns the plan of a feature service.

        Raises:
            NotFoundError: No such service (or it names an unknown view or feature).
            InvalidArgumentError: The name is empty, or two features share a name.
            FailedPreconditionError: No registry is loaded, or a view is not online.

        """
        registry = self._require_registry()
        found = self._services.get((name, full_feature_names))
        if found is None:  # unknown: let the shared resolution word the error
            resolve_feature_service(registry, name, full_feature_names=full_feature_names)
            raise AssertionError("unreachable: an unknown service always raises")
        if isinstance(found, SkewlessError):
            raise found
        return found

    def for_features(self, refs: Sequence[str], *, full_feature_names: bool = False) -> LookupPlan:
        """Returns the plan of an explicit feature list, compiling it on first use.

        Raises:
            InvalidArgumentError: The list is empty or malformed.
            ResourceExhaustedError: More than `MAX_FEATURE_REFS` references.
            NotFoundError: A reference names an unknown view or feature.
            FailedPreconditionError: No registry is loaded, or a view is not online.

        """
        key = (tuple(refs), full_feature_names)
        cache = self._lists
        plan = cache.get(key)
        if plan is not None:
            return plan
        registry = self._require_registry()
        if len(refs) > MAX_FEATURE_REFS:
            raise ResourceExhaustedError(
                f"{len(refs)} feature references exceed the limit of {MAX_FEATURE_REFS} "
                "per request; split the request",
                reason="TOO_MANY_FEATURES",
                metadata={"limit": str(MAX_FEATURE_REFS), "count": str(len(refs))},
            )
        resolved = resolve_feature_refs(registry, key[0], full_feature_names=full_feature_names)
        plan = compile_plan(self.project, resolved, self._views)
        cache[key] = plan
        if len(cache) > _LIST_CACHE_SIZE:
            cache.popitem(last=False)
        return plan
