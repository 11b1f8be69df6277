"""The Python API for feature definitions.

These frozen dataclasses are what a feature repository's YAML files load into, and what
Python code builds directly; both become the same `skewless.v1` registry messages through
`to_proto()`. Values are kept as written (type names, duration strings) so that
`skewless.registry.validation` can report every problem at once; `to_proto()` on an
invalid object raises `DefinitionError` for the first problem it meets.

Example:
    >>> driver = Entity(name="driver", join_keys=("driver_id",), value_type="INT64")
    >>> source = FileSource(name="driver_stats_source", path="data/driver_stats.parquet")
    >>> view = FeatureView(
    ...     name="driver_stats",
    ...     entities=(driver,),
    ...     source=source,
    ...     ttl="2d",
    ...     features=(Feature(name="conv_rate", value_type="FLOAT32"),),
    ... )
    >>> service = FeatureService(name="driver_ranking", features=("driver_stats",))
    >>> registry = RepoDefinitions((driver,), (source,), (view,), (service,)).to_registry("rides")
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import PurePath

from google.protobuf import duration_pb2

from skewless.core.errors import DefinitionError
from skewless.core.names import EVENT_TIMESTAMP
from skewless.core.types import parse_value_type
from skewless.registry.feature_refs import parse_feature_ref
from skewless.registry.policies import Policy
from skewless.v1 import registry_pb2, types_pb2

__all__ = [
    "DataSource",
    "DeltaSource",
    "Entity",
    "Feature",
    "FeatureLogging",
    "FeatureService",
    "FeatureView",
    "FileSource",
    "JoinKey",
    "PushSource",
    "RepoDefinitions",
    "SqlSource",
    "file_format_of",
    "parse_duration",
    "resolve_value_type",
]

_DURATION_PART = re.compile(r"(\d+)([wdhms])")
_DURATION_FULL = re.compile(r"(?:\d+[wdhms])+")
_UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_FORMATS = {
    "parquet": registry_pb2.FILE_FORMAT_PARQUET,
    "csv": registry_pb2.FILE_FORMAT_CSV,
}

#: A type as written in a definition: a name (`"INT64"`) or a `skewless.v1.ValueType` number.
TypeSpec = str | int
#: A duration as written in a definition: `"2d"`, `"1h30m"`, `"0"`, 0, a timedelta, or None.
DurationSpec = str | int | timedelta | None


def parse_duration(value: DurationSpec) -> timedelta:
    """Parses a TTL or schedule: `90s`, `15m`, `2h`, `2d`, `1w`, combinations such as `1h30m`, `0`.

    Args:
        value: The duration as written; None and 0 mean zero.

    Returns:
        The duration (zero means "forever" for a TTL and "not scheduled" for a schedule).

    Raises:
        ValueError: The value is not a duration; the message shows the accepted forms.

    """
    if value is None:
        return timedelta(0)
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise ValueError(f"a duration cannot be negative, got {value}")
        return value
    if isinstance(value, bool):
        raise ValueError(f"bad duration {value!r}: write a number with a unit, e.g. 90s, 2h, 2d")
    if isinstance(value, int):
        if value == 0:
            return timedelta(0)
        raise ValueError(
            f"bad duration {value!r}: a number needs a unit (s, m, h, d, w), e.g. {value}s"
        )
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "0":
            return timedelta(0)
        if _DURATION_FULL.fullmatch(text):
            seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
            return timedelta(seconds=seconds)
    raise ValueError(
        f"bad duration {value!r}: use a number and a unit (s, m, h, d, w) such as 90s, 15m, "
        "2h, 2d, 1w, a combination such as 1h30m, or 0"
    )


def resolve_value_type(value: TypeSpec) -> int:
    """Returns the `skewless.v1.ValueType` number of a type name or number.

    Raises:
        ValueError: The type is unknown; the message lists the known ones.

    """
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"a type must be a name such as INT64, got {value!r}")
    if isinstance(value, int):
        if value == 0 or value not in types_pb2.ValueType.values():
            parse_value_type(f"#{value}")  # raises, listing the known types
        return value
    return parse_value_type(value)


def file_format_of(path: str, declared: str | None = None) -> int | None:
    """Returns the `FileFormat` of a file source: the declared one, else the path's extension.

    Args:
        path: The source's path or glob.
        declared: The `format` setting (`parquet` or `csv`), if any.

    Returns:
        The format number, or None when it is unknown (bad name or no known extension).

    """
    if declared:
        return _FORMATS.get(declared.strip().lower())
    suffix = PurePath(path).suffix.lower().lstrip(".")
    return _FORMATS.get(suffix)


def _duration_proto(value: DurationSpec, what: str) -> duration_pb2.Duration | None:
    """Returns the duration message, or None (field left unset) for zero."""
    try:
        delta = parse_duration(value)
    except ValueError as exc:
        raise DefinitionError(f"{what}: {exc}", reason="INVALID_DEFINITION") from exc
    if not delta:
        return None
    proto = duration_pb2.Duration()
    proto.FromTimedelta(delta)
    return proto


def _type_number(value: TypeSpec, what: str) -> int:
    try:
        return resolve_value_type(value)
    except ValueError as exc:
        raise DefinitionError(f"{what}: {exc}", reason="INVALID_DEFINITION") from exc


@dataclass(frozen=True)
class JoinKey:
    """One key column of an entity.

    Attributes:
        name: The column name in sources and requests.
        value_type: Its type (`INT64`, `STRING`, ...); None takes the entity's `value_type`.

    """

    name: str
    value_type: TypeSpec | None = None


@dataclass(frozen=True)
class Entity:
    """A thing features describe (a driver, a customer) and the columns that identify it.

    Attributes:
        name: Unique identifier within the project.
        join_keys: Key columns, in order: names typed by `value_type`, or `JoinKey`s.
        value_type: Type of the join keys given by name only.
        description: What the entity is.
        owner: The responsible team or person.
        tags: Free-form labels.
        origin: The definition file this came from (for messages); not part of equality.

    """

    name: str
    join_keys: tuple[str | JoinKey, ...]
    value_type: TypeSpec | None = None
    description: str = ""
    owner: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    origin: str = field(default="", compare=False)

    def typed_join_keys(self) -> tuple[JoinKey, ...]:
        """Returns the join keys as `JoinKey`s, each with its own or the entity's type."""
        return tuple(
            JoinKey(k, self.value_type)
            if isinstance(k, str)
            else JoinKey(k.name, k.value_type if k.value_type is not None else self.value_type)
            for k in self.join_keys
        )

    def to_proto(self) -> registry_pb2.Entity:
        """Returns the registry message.

        Raises:
            DefinitionError: A join key has no type or an unknown type.

        """
        proto = registry_pb2.Entity(
            name=self.name, description=self.description, owner=self.owner, tags=dict(self.tags)
        )
        for key in self.typed_join_keys():
            if key.value_type is None:
                raise DefinitionError(
                    f"entity {self.name!r}: join key {key.name!r} has no type",
                    reason="INVALID_DEFINITION",
                )
            vt = _type_number(key.value_type, f"entity {self.name!r}")
            proto.join_keys.add(name=key.name, value_type=vt)
        return proto


@dataclass(frozen=True)
class _SourceBase:
    name: str
    timestamp_field: str = EVENT_TIMESTAMP
    created_timestamp_field: str = ""
    description: str = ""
    owner: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    origin: str = field(default="", compare=False)

    def _base_proto(self) -> registry_pb2.DataSource:
        return registry_pb2.DataSource(
            name=self.name,
            timestamp_field=self.timestamp_field,
            created_timestamp_field=self.created_timestamp_field,
            description=self.description,
            owner=self.owner,
            tags=dict(self.tags),
        )


@dataclass(frozen=True, kw_only=True)
class FileSource(_SourceBase):
    """Parquet or CSV files: one path or glob, relative to the repository root.

    Attributes:
        name: Unique identifier within the project.
        path: File path or glob (`data/driver_stats.parquet`, `data/trips/*.csv`).
        format: `parquet` or `csv`; None infers it from the extension.
        timestamp_field: Column of each row's event time.
        created_timestamp_field: Optional column of each row's creation time (tie breaker).
        description: What the source holds.
        owner: The responsible team or person.
        tags: Free-form labels.
        origin: The definition file this came from (for messages); not part of equality.

    """

    path: str
    format: str | None = None

    def to_proto(self) -> registry_pb2.DataSource:
        """Returns the registry message, with the format made explicit.

        Raises:
            DefinitionError: The format is unknown and cannot be inferred.

        """
        fmt = file_format_of(self.path, self.format)
        if fmt is None:
            raise DefinitionError(
                f"source {self.name!r}: cannot tell the format of {self.path!r}; "
                "use a .parquet or .csv path or set format: parquet|csv",
                reason="INVALID_DEFINITION",
            )
        proto = self._base_proto()
        file_format = registry_pb2.FileFormat.ValueType(fmt)  # int at run time; the stubs' NewType
        proto.file.CopyFrom(registry_pb2.FileSource(path=self.path, format=file_format))
        return proto


@dataclass(frozen=True, kw_only=True)
class SqlSource(_SourceBase):
    """A DuckDB SELECT over the project's file sources, each readable by its name.

    Attributes:
        name: Unique identifier within the project.
        query: The SELECT statement.
        timestamp_field: Column of each row's event time.
        created_timestamp_field: Optional column of each row's creation time (tie breaker).
        description: What the source holds.
        owner: The responsible team or person.
        tags: Free-form labels.
        origin: The definition file this came from (for messages); not part of equality.

    """

    query: str

    def to_proto(self) -> registry_pb2.DataSource:
        """Returns the registry message."""
        proto = self._base_proto()
        proto.sql.CopyFrom(registry_pb2.SqlSource(query=self.query.strip()))
        return proto


@dataclass(frozen=True, kw_only=True)
class DeltaSource(_SourceBase):
    """A Delta Lake table: its folder, relative to the repository root, and a version.

    Attributes:
        name: Unique identifier within the project.
        path: The table's folder (holding `_delta_log`).
        version: The table version to read; None reads the latest at each run.
        timestamp_field: Column of each row's event time.
        created_timestamp_field: Optional column of each row's creation time (tie breaker).
        description: What the source holds.
        owner: The responsible team or person.
        tags: Free-form labels.
        origin: The definition file this came from (for messages); not part of equality.

    """

    path: str
    version: int | None = None

    def to_proto(self) -> registry_pb2.DataSource:
        """Returns the registry message."""
        proto = self._base_proto()
        proto.delta.CopyFrom(registry_pb2.DeltaSource(path=self.path, version=self.version))
        return proto


@dataclass(frozen=True, kw_only=True)
class PushSource(_SourceBase):
    """Rows pushed by stream processors through `OnlineService.PushFeatures`.

    Attributes:
        name: Unique identifier within the project.
        timestamp_field: Column of each row's event time.
        created_timestamp_field: Optional column of each row's creation time (tie breaker).
        description: What the source holds.
        owner: The responsible team or person.
        tags: Free-form labels.
        origin: The definition file this came from (for messages); not part of equality.

    """

    def to_proto(self) -> registry_pb2.DataSource:
        """Returns the registry message."""
        proto = self._base_proto()
        proto.push.CopyFrom(registry_pb2.PushSource())
        return proto


#: Any data source definition.
DataSource = FileSource | SqlSource | PushSource | DeltaSource


@dataclass(frozen=True)
class Feature:
    """One typed feature column of a view.

    Attributes:
        name: Unique identifier within the view.
        value_type: Declared type (`FLOAT32`, `INT64`, `STRING_LIST`, ...).
        description: What the feature means.
        tags: Free-form labels.

    """

    name: str
    value_type: TypeSpec
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)

    def to_proto(self) -> registry_pb2.Feature:
        """Returns the registry message.

        Raises:
            DefinitionError: The type is unknown.

        """
        return registry_pb2.Feature(
            name=self.name,
            value_type=types_pb2.ValueType.ValueType(
                _type_number(self.value_type, f"feature {self.name!r}")
            ),
            description=self.description,
            tags=dict(self.tags),
        )


@dataclass(frozen=True)
class FeatureView:
    """Features computed together from one source for one set of entities.

    Attributes:
        name: Unique identifier within the project.
        entities: The entities (or their names) whose join keys key the rows.
        source: The data source (or its name).
        features: The features the view produces.
        sql: Optional DuckDB SELECT over the relation `source`; empty reads the source as is.
        ttl: How long a value stays valid (`2d`); zero or None means forever.
        schedule: Incremental materialization cadence (`1h`); zero or None means none.
        online: Whether the view is written to the online store.
        offline: Whether the view's history is kept in the offline store.
        description: What the view holds.
        owner: The responsible team or person.
        tags: Free-form labels.
        offline_retention: How long offline history is kept (`90d`); zero or None means
            forever.
        origin: The definition file this came from (for messages); not part of equality.

    """

    name: str
    entities: tuple[str | Entity, ...]
    source: str | DataSource
    features: tuple[Feature, ...]
    sql: str = ""
    ttl: DurationSpec = None
    schedule: DurationSpec = None
    online: bool = True
    offline: bool = True
    description: str = ""
    owner: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    offline_retention: DurationSpec = None
    origin: str = field(default="", compare=False)

    @property
    def entity_names(self) -> tuple[str, ...]:
        """The names of the view's entities."""
        return tuple(e if isinstance(e, str) else e.name for e in self.entities)

    @property
    def source_name(self) -> str:
        """The name of the view's source."""
        return self.source if isinstance(self.source, str) else self.source.name

    def to_proto(self) -> registry_pb2.FeatureView:
        """Returns the registry message.

        Raises:
            DefinitionError: A feature type, the TTL or the schedule is invalid.

        """
        what = f"feature view {self.name!r}"
        return registry_pb2.FeatureView(
            name=self.name,
            entities=list(self.entity_names),
            features=[f.to_proto() for f in self.features],
            source=self.source_name,
            sql=self.sql.strip(),
            ttl=_duration_proto(self.ttl, f"{what}: ttl"),
            schedule=_duration_proto(self.schedule, f"{what}: schedule"),
            online=self.online,
            offline=self.offline,
            description=self.description,
            owner=self.owner,
            tags=dict(self.tags),
            offline_retention=_duration_proto(self.offline_retention, f"{what}: offline_retention"),
        )


#: Shortest `report_schedule` of feature logging (the report joins the whole period).
MIN_REPORT_SCHEDULE = timedelta(minutes=1)


@dataclass(frozen=True)
class FeatureLogging:
    """Feature logging of a feature service: which served calls the skew report replays.

    Attributes:
        sample_rate: The share of `GetOnlineFeatures` calls logged, in [0, 1]; 0 is off.
        report_schedule: How often the server computes the skew report over the last
            period and exposes it as Prometheus gauges (`1h`); zero or None means never.

    """

    sample_rate: float = 0.0
    report_schedule: DurationSpec = None

    def to_proto(self, what: str) -> registry_pb2.FeatureLogging:
        """Returns the registry message.

        Raises:
            DefinitionError: The sample rate is not in [0, 1] or the schedule is invalid.

        """
        rate = self.sample_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise DefinitionError(
                f"{what}: logging.sample_rate must be a number from 0 to 1, got {rate!r}",
                reason="INVALID_DEFINITION",
            )
        schedule = _duration_proto(self.report_schedule, f"{what}: logging.report_schedule")
        if schedule is not None and schedule.ToTimedelta() < MIN_REPORT_SCHEDULE:
            raise DefinitionError(
                f"{what}: logging.report_schedule must be at least 1m (or 0 for never)",
                reason="INVALID_DEFINITION",
            )
        return registry_pb2.FeatureLogging(sample_rate=float(rate), report_schedule=schedule)


@dataclass(frozen=True)
class FeatureService:
    """A named set of features a model consumes.

    Attributes:
        name: Unique identifier within the project.
        features: Items in order: `view` (all its features), `view:feature`, or a
            `FeatureView` (all its features).
        description: What the service is for.
        owner: The responsible team or person.
        tags: Free-form labels.
        logging: Feature logging of the served calls (None: off).
        origin: The definition file this came from (for messages); not part of equality.

    """

    name: str
    features: tuple[str | FeatureView, ...]
    description: str = ""
    owner: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    logging: FeatureLogging | None = None
    origin: str = field(default="", compare=False)

    def refs(self) -> tuple[tuple[str, str | None], ...]:
        """Returns the items as (view, feature or None for all features).

        Raises:
            DefinitionError: An item is not `view` or `view:feature`.

        """
        out: list[tuple[str, str | None]] = []
        for item in self.features:
            if not isinstance(item, str):
                out.append((item.name, None))
                continue
            try:
                out.append(parse_feature_ref(item))
            except ValueError as exc:
                raise DefinitionError(
                    f"feature service {self.name!r}: {exc}", reason="INVALID_DEFINITION"
                ) from None
        return tuple(out)

    def to_proto(self) -> registry_pb2.FeatureService:
        """Returns the registry message: one projection per view, in first-mention order.

        A view named whole gets an empty feature list (all of its features).
        """
        order: list[str] = []
        selected: dict[str, list[str] | None] = {}
        for view, feature in self.refs():
            if view not in selected:
                order.append(view)
                selected[view] = []
            current = selected[view]
            if feature is None:
                selected[view] = None
            elif current is not None and feature not in current:
                current.append(feature)
        return registry_pb2.FeatureService(
            name=self.name,
            projections=[
                registry_pb2.FeatureProjection(feature_view=v, features=selected[v] or [])
                for v in order
            ],
            description=self.description,
            owner=self.owner,
            tags=dict(self.tags),
            logging=(
                self.logging.to_proto(f"feature service {self.name!r}")
                if self.logging is not None
                else None
            ),
        )


@dataclass(frozen=True)
class RepoDefinitions:
    """Every definition of a feature repository.

    Attributes:
        entities: The entities.
        sources: The data sources.
        feature_views: The feature views.
        feature_services: The feature services.
        policies: Who may do what once the server authenticates callers.

    """

    entities: tuple[Entity, ...] = ()
    sources: tuple[DataSource, ...] = ()
    feature_views: tuple[FeatureView, ...] = ()
    feature_services: tuple[FeatureService, ...] = ()
    policies: tuple[Policy, ...] = ()

    def to_registry(self, project: str) -> registry_pb2.Registry:
        """Returns the registry (version 0, no digest) with every list sorted by name.

        Sources and entities referenced by object from a view are included even when
        not listed in `sources`/`entities` (once per name).

        Raises:
            DefinitionError: An object cannot be converted (see each `to_proto`).

        """
        entities = {e.name: e for e in self.entities}
        sources: dict[str, DataSource] = {s.name: s for s in self.sources}
        for view in self.feature_views:
            for entity in view.entities:
                if not isinstance(entity, str):
                    entities.setdefault(entity.name, entity)
            if not isinstance(view.source, str):
                sources.setdefault(view.source.name, view.source)
        return registry_pb2.Registry(
            project=project,
            entities=[entities[n].to_proto() for n in sorted(entities)],
            data_sources=[sources[n].to_proto() for n in sorted(sources)],
            feature_views=[v.to_proto() for v in sorted(self.feature_views, key=_name)],
            feature_services=[s.to_proto() for s in sorted(self.feature_services, key=_name)],
            policies=[p.to_proto() for p in sorted(self.policies, key=lambda p: p.name)],
        )


def _name(obj: FeatureView | FeatureService) -> str:
    return obj.name
