"""What an apply changes: two registries compared object by object, field by field.

`plan_changes` compares the registry being served with the one a repository defines and
returns a `RegistryPlan`: every entity, source, feature view and feature service that is
added, removed or changed (with each changed field, before and after), which changes are
*breaking*, and the registry `apply` would store.

Breaking changes (`apply` refuses them unless told `allow_breaking`):

* a feature's type changes, or a view's entities or their join keys (names, types,
  order) change, while the view holds stored values;
* a feature is removed from a view while a feature service serves it (its callers get
  other columns);
* a view's TTL is shortened (values served and trained on until now become too old).

A feature type or key change also starts a new *generation* of the view (`FeatureView.
generation`): its online keys, offline history and watermark move to a new storage name
(`skewless.core.names.storage_name`), so values written under the old definition are never
read as the new one. Such a view answers NOT_FOUND until it is materialized again; the
plan lists it in `rematerialize`. Whether a view holds values is asked of the caller
(`has_values(view, generation)`), since the stores sit in the layers above.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from skewless.v1 import registry_pb2

__all__ = [
    "Action",
    "FieldChange",
    "ObjectChange",
    "RegistryPlan",
    "format_duration",
    "plan_changes",
]

#: Asked whether a view has stored values under a generation: (view name, generation).
HasValues = Callable[[str, int], bool]


class Action(enum.StrEnum):
    """What happens to an object."""

    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"


#: The kinds of object, in the order a plan lists them, with their registry field.
KINDS: tuple[tuple[str, str], ...] = (
    ("entity", "entities"),
    ("data source", "data_sources"),
    ("feature view", "feature_views"),
    ("feature service", "feature_services"),
)
# Repeated message fields whose items are compared by a key rather than by position.
_KEYED = {"features": "name", "join_keys": "name", "projections": "feature_view"}
# Fields that apply manages itself and that no definition sets.
_MANAGED = {"generation"}


@dataclass(frozen=True)
class FieldChange:
    """One field that differs.

    Attributes:
        field: Its path, e.g. `ttl`, `features.conv_rate.value_type`, `tags.tier`.
        before: The old value as text ("" when unset).
        after: The new value as text ("" when unset).

    """

    field: str
    before: str
    after: str


@dataclass(frozen=True)
class ObjectChange:
    """One object an apply adds, removes or changes.

    Attributes:
        kind: `entity`, `data source`, `feature view` or `feature service`.
        name: The object's name.
        action: Added, removed or changed.
        fields: The fields that differ (changed objects only).
        breaking: Why the change breaks, one sentence each; empty when it does not.
        notes: Advice after applying (what to materialize again); never a refusal.

    """

    kind: str
    name: str
    action: Action
    fields: tuple[FieldChange, ...] = ()
    breaking: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class RegistryPlan:
    """What applying a repository would do.

    Attributes:
        current_version: The version compared against; 0 when nothing is applied yet.
        changes: Every object that changes, by kind then name.
        rematerialize: Views that start a new generation (empty until materialized).
        registry: The registry apply would store (generations carried over or advanced).

    """

    current_version: int
    changes: tuple[ObjectChange, ...]
    rematerialize: tuple[str, ...]
    registry: registry_pb2.Registry = field(repr=False)

    @property
    def breaking(self) -> tuple[ObjectChange, ...]:
        """The changes that are breaking."""
        return tuple(c for c in self.changes if c.breaking)


def format_duration(value: timedelta) -> str:
    """A TTL or schedule the way definitions write it: `2d`, `1h30m`, `90s`, `0`."""
    seconds = int(value.total_seconds())
    if seconds <= 0:
        return "0"
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out += f"{seconds // size}{unit}"
            seconds %= size
    return out


def _scalar(fd: Any, value: Any) -> str:
    enum_type = fd.enum_type
    if enum_type is not None:
        name = enum_type.values_by_number.get(value)
        text = name.name if name is not None else str(value)
        prefix = "".join(f"{w}_" for w in _enum_prefix(enum_type.name))
        return str(text).removeprefix(prefix)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _enum_prefix(name: str) -> list[str]:
    """`ValueType` -> ["VALUE", "TYPE"] (the prefix of its values)."""
    words, current = [], ""
    for ch in name:
        if ch.isupper() and current:
            words.append(current.upper())
            current = ""
        current += ch
    words.append(current.upper())
    return words


def _flatten(message: Message, prefix: str = "") -> dict[str, str]:
    """Every set field of a message as `path -> text` (maps and keyed lists by key)."""
    out: dict[str, str] = {}
    for fd in message.DESCRIPTOR.fields:
        if fd.name in _MANAGED and not prefix:
            continue
        path = f"{prefix}{fd.name}"
        value = getattr(message, fd.name)
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            for key in sorted(value):
                out[f"{path}.{key}"] = str(value[key])
        elif fd.is_repeated:
            if fd.message_type is None:
                if len(value):
                    out[path] = ", ".join(_scalar(fd, v) for v in value)
                continue
            key = _KEYED.get(fd.name)
            if key is None:
                for i, item in enumerate(value):
                    out.update(_flatten(item, f"{path}[{i}]."))
                continue
            order = [str(getattr(item, key)) for item in value]
            if order:
                out[path] = ", ".join(order)
            for item in value:
                name = str(getattr(item, key))
                inner = _flatten(item, f"{path}.{name}.")
                inner.pop(f"{path}.{name}.{key}", None)
                out.update(inner or {f"{path}.{name}": "(all)"})
        elif fd.message_type is not None:
            if not message.HasField(fd.name):
                continue
            if fd.message_type.full_name == "google.protobuf.Duration":
                out[path] = format_duration(value.ToTimedelta())
            else:
                inner = _flatten(value, f"{path}.")
                out.update(inner or {path: "(set)"})
        elif fd.has_presence and not message.HasField(fd.name):
            continue
        elif value != fd.default_value or fd.type == FieldDescriptor.TYPE_BOOL:
            out[path] = _scalar(fd, value)
    return out


def _field_changes(before: Message, after: Message) -> tuple[FieldChange, ...]:
    old, new = _flatten(before), _flatten(after)
    return tuple(
        FieldChange(key, old.get(key, ""), new.get(key, ""))
        for key in sorted(old.keys() | new.keys())
        if old.get(key, "") != new.get(key, "")
    )


def _by_name(items: Iterable[Any]) -> dict[str, Any]:
    return {item.name: item for item in items}


class _Index:
    """One registry, indexed for the questions the plan asks."""

    def __init__(self, registry: registry_pb2.Registry | None) -> None:
        reg = registry if registry is not None else registry_pb2.Registry()
        self.registry = reg
        self.entities: dict[str, registry_pb2.Entity] = _by_name(reg.entities)
        self.views: dict[str, registry_pb2.FeatureView] = _by_name(reg.feature_views)
        self.services: dict[str, registry_pb2.FeatureService] = _by_name(reg.feature_services)

    def keys(self, view: registry_pb2.FeatureView) -> list[tuple[str, str, int]]:
        """(entity, join key, type) of every key of a view, in order."""
        out: list[tuple[str, str, int]] = []
        for name in view.entities:
            entity = self.entities.get(name)
            for key in entity.join_keys if entity is not None else ():
                out.append((name, key.name, int(key.value_type)))
        return out

    def served(self, service: registry_pb2.FeatureService) -> set[tuple[str, str]]:
        """(view, feature) of every feature a service serves."""
        out: set[tuple[str, str]] = set()
        for projection in service.projections:
            view = self.views.get(projection.feature_view)
            if view is None:
                continue
            names = projection.features or [f.name for f in view.features]
            out.update((view.name, n) for n in names)
        return out


def _ttl(view: registry_pb2.FeatureView) -> timedelta:
    return view.ttl.ToTimedelta() if view.HasField("ttl") else timedelta(0)


def _view_change(
    old: _Index,
    new: _Index,
    name: str,
    has_values: HasValues,
    served_before: Mapping[str, set[tuple[str, str]]],
) -> tuple[list[str], list[str], bool]:
    """(breaking reasons, notes, whether a new generation starts) of a changed view."""
    before, after = old.views[name], new.views[name]
    stored = has_values(name, before.generation)
    breaking: list[str] = []
    notes: list[str] = []
    old_types = {f.name: f.value_type for f in before.features}
    new_types = {f.name: f.value_type for f in after.features}
    retyped = sorted(n for n in old_types.keys() & new_types.keys() if old_types[n] != new_types[n])
    rekeyed = old.keys(before) != new.keys(after)
    if stored:
        for feature in retyped:
            breaking.append(
                f"feature {feature!r} changes type while the view holds values: they "
                "cannot be read as the new type"
            )
        if rekeyed:
            breaking.append(
                "the view's entities or join keys change while it holds values: they "
                "were stored under the old keys"
            )
    removed = sorted(old_types.keys() - new_types.keys())
    for feature in removed:
        users = sorted(s for s, served in served_before.items() if (name, feature) in served)
        users = [s for s in users if s in new.services]
        if users:
            breaking.append(
                f"feature {feature!r} is removed but feature service(s) "
                f"{', '.join(users)} serve it: their callers get other columns"
            )
    old_ttl, new_ttl = _ttl(before), _ttl(after)
    if new_ttl and (not old_ttl or new_ttl < old_ttl):
        breaking.append(
            f"the TTL shortens from {format_duration(old_ttl)} to {format_duration(new_ttl)}: "
            "values served and trained on until now may become too old"
        )
    added = sorted(new_types.keys() - old_types.keys())
    recomputed = before.sql != after.sql or before.source != after.source
    if stored and not (retyped or rekeyed) and (added or recomputed):
        what = "its sql or source changes" if recomputed else f"it gains {', '.join(added)}"
        notes.append(
            f"{what}: values already stored keep the old definition; materialize their "
            f"windows again to recompute them (skewless materialize START END --views {name})"
        )
    return breaking, notes, bool(retyped or rekeyed)


def _next_free(name: str, start: int, has_values: HasValues) -> int:
    generation = start
    while has_values(name, generation):
        generation += 1
    return generation


def plan_changes(
    current: registry_pb2.Registry | None,
    proposed: registry_pb2.Registry,
    *,
    has_values: HasValues,
) -> RegistryPlan:
    """Compares the registry being served with the one a repository defines.

    Args:
        current: The stored registry; None when nothing was applied yet.
        proposed: The validated registry of the definitions (generations unset).
        has_values: Whether a view holds stored values under a generation.

    Returns:
        The changes, which are breaking, and the registry to store: each view keeps its
        generation, or takes the next one when a feature type or its keys change (a new
        view takes the first generation that holds no values).

    """
    old, new = _Index(current), _Index(proposed)
    served_before = {name: old.served(s) for name, s in old.services.items()}
    registry = registry_pb2.Registry()
    registry.CopyFrom(proposed)
    changes: list[ObjectChange] = []
    rematerialize: list[str] = []
    for kind, attr in KINDS:
        before = _by_name(getattr(old.registry, attr))
        after = _by_name(getattr(proposed, attr))
        for name in sorted(before.keys() | after.keys()):
            if name not in after:
                changes.append(ObjectChange(kind, name, Action.REMOVED))
                continue
            if name not in before:
                notes: tuple[str, ...] = ()
                if attr == "feature_views" and has_values(name, 0):
                    notes = (
                        "values stored under this name by an earlier definition are left "
                        "alone: the view starts a new generation; materialize it",
                    )
                changes.append(ObjectChange(kind, name, Action.ADDED, notes=notes))
                continue
            fields = _field_changes(before[name], after[name])
            if attr != "feature_views":
                if fields:
                    changes.append(ObjectChange(kind, name, Action.CHANGED, fields))
                continue
            breaking, view_notes, new_generation = _view_change(
                old, new, name, has_values, served_before
            )
            if new_generation:
                rematerialize.append(name)
                view_notes.insert(
                    0,
                    "a feature type or the keys change: the view starts a new generation "
                    "of stored values and answers NOT_FOUND until materialized again "
                    f"(skewless materialize-incremental --views {name})",
                )
            if fields or breaking:
                changes.append(
                    ObjectChange(
                        kind, name, Action.CHANGED, fields, tuple(breaking), tuple(view_notes)
                    )
                )
    for view in registry.feature_views:
        previous = old.views.get(view.name)
        if previous is None:
            view.generation = _next_free(view.name, 0, has_values)
        elif view.name in rematerialize:
            view.generation = _next_free(view.name, previous.generation + 1, has_values)
        else:
            view.generation = previous.generation
    return RegistryPlan(
        current_version=current.version if current is not None else 0,
        changes=tuple(changes),
        rematerialize=tuple(rematerialize),
        registry=registry,
    )
