"""Every check a feature repository must pass before it is applied.

`validate_definitions` looks at all definitions together and returns every problem it
finds (it never stops at the first): names that are not safe identifiers, duplicates,
unknown references and types, bad TTLs or schedules, source paths matching no file,
SQL that DuckDB cannot bind, and view outputs that lack a column or produce another
type than declared. SQL is only bound (`DESCRIBE SELECT ...`), never run; identifiers
that go into SQL are validated first and double-quoted.

Each problem names the file, the object and what is wrong; `raise_for_problems` turns
them into one `DefinitionProblemsError` listing all of them.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from skewless.core.duckdb_session import connect
from skewless.core.errors import DefinitionError
from skewless.core.names import (
    FEATURE_LOG_COLUMNS,
    FEATURE_LOG_DIR,
    IDENTIFIER_RULE,
    RESERVED_COLUMNS,
    SOURCE_RELATION,
    is_identifier,
    quote_identifier,
)
from skewless.core.types import (
    KEY_TYPES,
    TypeFamily,
    duckdb_column_type,
    duckdb_type,
    duckdb_type_fits,
    value_type_name,
)
from skewless.registry.definitions import (
    DataSource,
    DeltaSource,
    Entity,
    FeatureService,
    FeatureView,
    FileSource,
    JoinKey,
    PushSource,
    RepoDefinitions,
    SqlSource,
    file_format_of,
    parse_duration,
    resolve_value_type,
)
from skewless.registry.delta_sources import open_delta_source
from skewless.registry.feature_refs import parse_feature_ref
from skewless.registry.policies import policy_problems
from skewless.v1 import registry_pb2, types_pb2

__all__ = [
    "DefinitionProblem",
    "DefinitionProblemsError",
    "raise_for_problems",
    "resolve_source_files",
    "validate_definitions",
]

_PYTHON_ORIGIN = "<python>"
_VT = types_pb2.ValueType


@dataclass(frozen=True)
class DefinitionProblem:
    """One thing wrong with the definitions.

    Attributes:
        file: The definition file, relative to the repository (`<python>` for API objects).
        obj: The object, e.g. `feature view 'driver_stats'`; empty for file-level problems.
        message: What is wrong and how to fix it.

    """

    file: str
    obj: str
    message: str

    def __str__(self) -> str:
        return ": ".join(part for part in (self.file, self.obj, self.message) if part)


class DefinitionProblemsError(DefinitionError):
    """The definitions have problems; `problems` lists every one of them."""

    def __init__(self, message: str, problems: Sequence[DefinitionProblem]) -> None:
        files = sorted({p.file for p in problems if p.file})
        super().__init__(
            message,
            metadata={"problem_count": str(len(problems)), "files": ", ".join(files)},
        )
        self.problems = tuple(problems)


def resolve_source_files(root: Path, path: str) -> list[Path]:
    """Returns the files a file source's path or glob matches, sorted.

    Args:
        root: The repository root that relative paths start from.
        path: The source's `path` (a file or a glob; `**` matches any depth).

    """
    full = Path(path) if Path(path).is_absolute() else root / path
    return sorted(Path(p) for p in glob.glob(str(full), recursive=True) if Path(p).is_file())


def raise_for_problems(problems: Iterable[DefinitionProblem], *, repo: str = "") -> None:
    """Raises one error listing every problem (duplicates dropped), if there is any.

    Args:
        problems: The problems found, in any order; they are grouped by file.
        repo: The repository, named in the message.

    Raises:
        DefinitionProblemsError: There is at least one problem.

    """
    unique = sorted(dict.fromkeys(problems), key=lambda p: p.file)
    if not unique:
        return
    where = f" of {repo}" if repo else ""
    count = f"{len(unique)} problem{'s' if len(unique) > 1 else ''}"
    lines = "\n".join(f"  - {p}" for p in unique)
    raise DefinitionProblemsError(
        f"{count} in the feature definitions{where}; nothing was applied:\n{lines}", unique
    )


def validate_definitions(
    definitions: RepoDefinitions, *, root: Path | None = None
) -> list[DefinitionProblem]:
    """Checks a repository's definitions as a whole.

    Args:
        definitions: Everything the repository defines.
        root: The repository root; file paths and SQL are checked against the data
            only when it is given.

    Returns:
        Every problem found; empty when the definitions are valid.

    """
    return _Validator(definitions, root).run()


def _origin(obj: Entity | DataSource | FeatureView | FeatureService) -> str:
    return obj.origin or _PYTHON_ORIGIN


def _known(names: Iterable[str]) -> str:
    listed = sorted(set(names))
    return ", ".join(listed) if listed else "none defined"


def _duck_message(exc: Exception) -> str:
    lines: list[str] = []
    for line in str(exc).splitlines():
        if line.startswith("LINE "):
            break
        if line.strip():
            lines.append(line.strip())
    return " ".join(lines)


class _Validator:
    """One validation run; `run` returns the problems."""

    def __init__(self, definitions: RepoDefinitions, root: Path | None) -> None:
        self.defs = definitions
        self.root = root
        self.problems: list[DefinitionProblem] = []
        self.entities: dict[str, Entity] = {}
        self.sources: dict[str, DataSource] = {}
        self.views: dict[str, FeatureView] = {}
        self.services: dict[str, FeatureService] = {}
        self.valid_sources: set[str] = set()
        self.invalid_entities: set[str] = set()
        self.source_files: dict[str, list[Path]] = {}
        self.delta_sets: dict[str, Any] = {}  # Delta sources' pyarrow datasets
        self._con: duckdb.DuckDBPyConnection | None = None

    def _policies(self) -> None:
        origins = {p.name: p.origin or _PYTHON_ORIGIN for p in self.defs.policies}
        for obj, message in policy_problems(self.defs.policies):
            name = obj.removeprefix("policy ").strip("'\"")
            self.problems.append(DefinitionProblem(origins.get(name, _PYTHON_ORIGIN), obj, message))

    def run(self) -> list[DefinitionProblem]:
        entities: list[Entity] = list(self.defs.entities)
        sources: list[DataSource] = list(self.defs.sources)
        for view in self.defs.feature_views:
            for entity in view.entities:
                if isinstance(entity, Entity):
                    _add_referenced(entities, entity)
            if not isinstance(view.source, str):
                _add_referenced(sources, view.source)
        for entity in entities:
            self._entity(entity)
        for source in sources:
            self._source(source)
        for view in self.defs.feature_views:
            self._view(view)
        for service in self.defs.feature_services:
            self._service(service)
        self._policies()
        if self._con is not None:
            self._con.close()
        return self.problems

    # -- helpers -----------------------------------------------------------------

    def add(self, origin: str, obj: str, message: str) -> None:
        self.problems.append(DefinitionProblem(origin, obj, message))

    def check_name(self, origin: str, obj: str, name: str, what: str = "name") -> bool:
        if not name:
            self.add(origin, obj, f"missing required field {what!r}")
            return False
        if not is_identifier(name):
            self.add(
                origin,
                obj,
                f"{what} {name!r:.80} is not a safe identifier: use {IDENTIFIER_RULE}",
            )
            return False
        return True

    def check_column(self, origin: str, obj: str, name: str, what: str) -> bool:
        if not self.check_name(origin, obj, name, what):
            return False
        if name in RESERVED_COLUMNS:
            self.add(
                origin,
                obj,
                f"{what} {name!r} is reserved by the offline store "
                f"({', '.join(sorted(RESERVED_COLUMNS))}); rename it",
            )
            return False
        return True

    def register(self, table: dict[str, Any], obj: Any, kind: str, label: str) -> None:
        other = table.get(obj.name)
        if other is None:
            table[obj.name] = obj
            return
        self.add(
            _origin(obj),
            label,
            f"duplicate {kind} name {obj.name!r} (also defined in {_origin(other)}); "
            "names must be unique in the project",
        )

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            self._con = connect(threads=1, file_search_path=self.root)
        return self._con

    # -- entities ------------------------------------------------------------------

    def _entity(self, entity: Entity) -> None:
        before = len(self.problems)
        self._check_entity(entity)
        if len(self.problems) > before:
            self.invalid_entities.add(entity.name)

    def _check_entity(self, entity: Entity) -> None:
        origin, obj = _origin(entity), f"entity {entity.name!r}"
        if self.check_name(origin, obj, entity.name):
            self.register(self.entities, entity, "entity", obj)
        if entity.value_type is not None:
            try:
                resolve_value_type(entity.value_type)
            except ValueError as exc:
                self.add(origin, obj, f"value_type: {exc}")
        if not entity.join_keys:
            self.add(origin, obj, "missing required field 'join_keys'")
        seen: set[str] = set()
        for key in entity.typed_join_keys():
            if not self.check_column(origin, obj, key.name, "join key"):
                continue
            if key.name in seen:
                self.add(origin, obj, f"join key {key.name!r} is listed twice")
            seen.add(key.name)
            self._key_type(origin, obj, key, entity)

    def _key_type(self, origin: str, obj: str, key: JoinKey, entity: Entity) -> None:
        if key.value_type is None:
            self.add(
                origin,
                obj,
                f"join key {key.name!r} has no type: set the entity's value_type or write "
                "the key as {name, value_type}",
            )
            return
        try:
            vt = resolve_value_type(key.value_type)
        except ValueError as exc:
            if key.value_type != entity.value_type:  # the entity's own type is reported once
                self.add(origin, obj, f"join key {key.name!r}: {exc}")
            return
        if vt not in KEY_TYPES:
            allowed = ", ".join(sorted(value_type_name(t) for t in KEY_TYPES))
            self.add(
                origin,
                obj,
                f"join key {key.name!r} has type {value_type_name(vt)}, which cannot be a "
                f"key; use one of {allowed}",
            )

    # -- sources -------------------------------------------------------------------

    def _source(self, source: DataSource) -> None:
        origin, obj = _origin(source), f"source {source.name!r}"
        ok = self.check_name(origin, obj, source.name)
        if ok and source.name == SOURCE_RELATION:
            self.add(
                origin, obj, "the name 'source' is reserved for the relation a view's sql reads"
            )
            ok = False
        if ok:
            self.register(self.sources, source, "source", obj)
        ok = self.check_name(origin, obj, source.timestamp_field, "timestamp_field") and ok
        if source.created_timestamp_field:
            ok = (
                self.check_name(
                    origin, obj, source.created_timestamp_field, "created_timestamp_field"
                )
                and ok
            )
            if source.created_timestamp_field == source.timestamp_field:
                self.add(origin, obj, "created_timestamp_field must differ from timestamp_field")
                ok = False
        if isinstance(source, FileSource):
            ok = self._file_source(origin, obj, source) and ok
        elif isinstance(source, DeltaSource):
            ok = self._delta_source(origin, obj, source) and ok
        elif isinstance(source, SqlSource):
            ok = self._sql_source(origin, obj, source) and ok
        if ok and self.sources.get(source.name) is source:
            self.valid_sources.add(source.name)

    def _file_source(self, origin: str, obj: str, source: FileSource) -> bool:
        if not source.path:
            self.add(origin, obj, "missing required field 'path'")
            return False
        if file_format_of(source.path, source.format) is None:
            if source.format:
                self.add(origin, obj, f"unknown format {source.format!r}; use parquet or csv")
            else:
                self.add(
                    origin,
                    obj,
                    f"cannot tell the format of {source.path!r}: use a .parquet or .csv "
                    "path, or set format: parquet|csv",
                )
            return False
        if self.root is None:
            return True
        files = resolve_source_files(self.root, source.path)
        if not files:
            self.add(origin, obj, _no_file_message(self.root, source.path))
            return False
        self.source_files[source.name] = files
        return True

    def _delta_source(self, origin: str, obj: str, source: DeltaSource) -> bool:
        if not source.path:
            self.add(origin, obj, "missing required field 'delta' (the table's folder)")
            return False
        if source.version is not None and source.version < 0:
            self.add(origin, obj, f"version {source.version} is negative")
            return False
        if self.root is None:
            return True
        try:
            self.delta_sets[source.name] = open_delta_source(
                self.root, source.name, source.path, source.version
            )
        except DefinitionError as exc:
            self.add(origin, obj, exc.message.split(": ", 1)[-1])
            return False
        return True

    def _relation(self, source: FileSource | DeltaSource) -> duckdb.DuckDBPyRelation:
        if isinstance(source, DeltaSource):
            return self.con.from_arrow(self.delta_sets[source.name])
        files = [str(p) for p in self.source_files[source.name]]
        if file_format_of(source.path, source.format) == registry_pb2.FILE_FORMAT_CSV:
            # duckdb's stub types one path; read_csv takes a list of files at run time
            return self.con.read_csv(files, header=True)  # type: ignore[arg-type]
        return self.con.read_parquet(files)

    def _single_select(self, origin: str, obj: str, query: str, what: str) -> bool:
        try:
            statements = duckdb.extract_statements(query)
        except duckdb.Error as exc:
            self.add(origin, obj, f"{what} is not valid SQL: {_duck_message(exc)}")
            return False
        if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
            self.add(origin, obj, f"{what} must be exactly one SELECT statement")
            return False
        return True

    def _sql_source(self, origin: str, obj: str, source: SqlSource) -> bool:
        if not source.query:
            self.add(origin, obj, "missing required field 'sql'")
            return False
        if not self._single_select(origin, obj, source.query, "sql"):
            return False
        if self.root is None:
            return True
        self._register_file_sources()
        try:
            self.con.execute(f"DESCRIBE {source.query}").fetchall()
        except duckdb.Error as exc:
            self.add(
                origin,
                obj,
                f"DuckDB cannot bind the sql: {_duck_message(exc)} (file sources are "
                "readable by name)",
            )
            return False
        return True

    def _register_file_sources(self) -> None:
        for name, source in self.sources.items():
            if (isinstance(source, FileSource) and name in self.source_files) or (
                isinstance(source, DeltaSource) and name in self.delta_sets
            ):
                try:
                    self._relation(source).create_view(name, replace=True)
                except duckdb.Error:
                    continue  # reported when a view reads it

    # -- feature views -------------------------------------------------------------

    def _view(self, view: FeatureView) -> None:
        origin, obj = _origin(view), f"feature view {view.name!r}"
        if self.check_name(origin, obj, view.name):
            self.register(self.views, view, "feature view", obj)
            if view.name == FEATURE_LOG_DIR:
                self.add(origin, obj, f"{FEATURE_LOG_DIR!r} is the feature logs' folder; rename it")
        keys = self._view_keys(origin, obj, view)
        source = self._view_source(origin, obj, view)
        reserved: dict[str, str] = {}
        if source is not None:
            reserved = {source.timestamp_field: "the source's timestamp_field"}
            if source.created_timestamp_field:
                reserved[source.created_timestamp_field] = "the source's created_timestamp_field"
        if not view.features:
            self.add(origin, obj, "missing required field 'features'")
        seen: set[str] = set()
        features_ok = True
        for feature in view.features:
            if not self.check_column(origin, obj, feature.name, "feature"):
                features_ok = False
                continue
            if feature.name in seen:
                self.add(origin, obj, f"feature {feature.name!r} is listed twice")
            seen.add(feature.name)
            if keys is not None and feature.name in keys:
                self.add(origin, obj, f"feature {feature.name!r} has the name of a join key")
            if feature.name in reserved:
                self.add(
                    origin,
                    obj,
                    f"feature {feature.name!r} has the name of {reserved[feature.name]}",
                )
            try:
                resolve_value_type(feature.value_type)
            except ValueError as exc:
                self.add(origin, obj, f"feature {feature.name!r}: {exc}")
                features_ok = False
        durations = (
            ("ttl", view.ttl),
            ("schedule", view.schedule),
            ("offline_retention", view.offline_retention),
        )
        for what, value in durations:
            try:
                parse_duration(value)
            except ValueError as exc:
                self.add(origin, obj, f"{what}: {exc}")
        if isinstance(source, PushSource) and view.sql:
            self.add(
                origin,
                obj,
                "a view over a push source cannot have sql: pushed rows already have the "
                "view's columns",
            )
        elif (
            source is not None
            and keys is not None
            and features_ok
            and self.root is not None
            and source.name in self.valid_sources
            and not isinstance(source, PushSource)
        ):
            self._view_sql(origin, obj, view, source, keys)

    def _view_keys(self, origin: str, obj: str, view: FeatureView) -> dict[str, JoinKey] | None:
        if not view.entities:
            self.add(origin, obj, "missing required field 'entities'")
            return None
        keys: dict[str, JoinKey] = {}
        complete = True
        for name in view.entity_names:
            entity = self.entities.get(name)
            if entity is None:
                self.add(origin, obj, f"unknown entity {name!r}; known: {_known(self.entities)}")
                complete = False
                continue
            if name in self.invalid_entities:
                complete = False  # already reported; its keys cannot be checked
            for key in entity.typed_join_keys():
                if key.name in keys:
                    self.add(
                        origin,
                        obj,
                        f"join key {key.name!r} comes from two of its entities; "
                        "a view's entities must have distinct join keys",
                    )
                    complete = False
                keys[key.name] = key
        if len(set(view.entity_names)) != len(view.entity_names):
            self.add(origin, obj, "an entity is listed twice in 'entities'")
            complete = False
        return keys if complete else None

    def _view_source(self, origin: str, obj: str, view: FeatureView) -> DataSource | None:
        name = view.source_name
        if not name:
            self.add(origin, obj, "missing required field 'source'")
            return None
        source = self.sources.get(name)
        if source is None:
            self.add(origin, obj, f"unknown source {name!r}; known: {_known(self.sources)}")
        return source

    def _view_sql(
        self,
        origin: str,
        obj: str,
        view: FeatureView,
        source: DataSource,
        keys: dict[str, JoinKey],
    ) -> None:
        query = view.sql or f"SELECT * FROM {SOURCE_RELATION}"
        if view.sql and not self._single_select(origin, obj, view.sql, "sql"):
            return
        try:
            if isinstance(source, FileSource | DeltaSource):
                relation = self._relation(source)
            else:
                assert isinstance(source, SqlSource)
                self._register_file_sources()
                relation = self.con.sql(source.query)
            relation.create_view(SOURCE_RELATION, replace=True)
        except duckdb.Error as exc:
            self.add(
                origin, obj, f"DuckDB cannot read source {source.name!r}: {_duck_message(exc)}"
            )
            return
        try:
            rows = self.con.execute(f"DESCRIBE {query}").fetchall()
        except duckdb.Error as exc:
            self.add(
                origin,
                obj,
                f"DuckDB cannot bind the sql against source {source.name!r}: {_duck_message(exc)}",
            )
            return
        columns = {str(row[0]): str(row[1]) for row in rows}
        output = "the sql output" if view.sql else f"source {source.name!r}"
        listed = ", ".join(columns)
        for field_name, column in (
            ("timestamp_field", source.timestamp_field),
            ("created_timestamp_field", source.created_timestamp_field),
        ):
            if not column:
                continue
            if column not in columns:
                self.add(
                    origin,
                    obj,
                    f"{output} has no column {column!r} (the source's {field_name}); "
                    f"columns: {listed}",
                )
            elif not _timestamp_column(columns[column]):
                cast = f"CAST({quote_identifier(column)} AS TIMESTAMPTZ)"
                fix = (
                    f"cast it in the view's sql: {cast}"
                    if view.sql
                    else f"give the view sql: SELECT * REPLACE ({cast} AS "
                    f"{quote_identifier(column)}) FROM source"
                )
                text = " (times stored as text)" if "CHAR" in columns[column].upper() else ""
                self.add(
                    origin,
                    obj,
                    f"column {column!r} of {output} is {columns[column]}{text}, not a "
                    f"TIMESTAMP; {fix}",
                )
        expected = [("join key", k.name, k.value_type) for k in keys.values()]
        expected += [("feature", f.name, f.value_type) for f in view.features]
        for what, name, spec in expected:
            vt = resolve_value_type(spec) if spec is not None else 0
            if name not in columns:
                self.add(
                    origin, obj, f"{output} has no column for {what} {name!r}; columns: {listed}"
                )
            elif vt and not duckdb_type_fits(vt, columns[name]):
                want = duckdb_type(vt)
                self.add(
                    origin,
                    obj,
                    f"{what} {name!r} is declared {value_type_name(vt)} (DuckDB {want}) but "
                    f"{output} has it as {columns[name]}; change the declared type or cast "
                    f"it in sql: CAST({quote_identifier(name)} AS {want}) AS "
                    f"{quote_identifier(name)}",
                )

    # -- feature services ----------------------------------------------------------

    def _service(self, service: FeatureService) -> None:
        origin, obj = _origin(service), f"feature service {service.name!r}"
        if self.check_name(origin, obj, service.name):
            self.register(self.services, service, "feature service", obj)
        if not service.features:
            self.add(origin, obj, "missing required field 'features'")
        whole: set[str] = set()
        picked: set[tuple[str, str]] = set()
        for item_ref in service.features:
            if not isinstance(item_ref, str):
                view_name, feature = item_ref.name, None
            else:
                try:
                    view_name, feature = parse_feature_ref(item_ref)
                except ValueError:
                    self.add(
                        origin, obj, f"bad item {item_ref!r:.80}: write 'view' or 'view:feature'"
                    )
                    continue
            item = view_name if feature is None else f"{view_name}:{feature}"
            view = self.views.get(view_name)
            if view is None:
                self.add(
                    origin, obj, f"unknown feature view {view_name!r}; known: {_known(self.views)}"
                )
                continue
            if feature is None:
                if view_name in whole or any(v == view_name for v, _ in picked):
                    self.add(origin, obj, f"feature view {view_name!r} is listed more than once")
                whole.add(view_name)
                continue
            names = [f.name for f in view.features]
            if feature not in names:
                self.add(
                    origin,
                    obj,
                    f"feature view {view_name!r} has no feature {feature!r}; its features: "
                    f"{', '.join(names)}",
                )
            elif (view_name, feature) in picked:
                self.add(origin, obj, f"{item!r} is listed twice")
            elif view_name in whole:
                self.add(
                    origin,
                    obj,
                    f"{item!r} is already included by {view_name!r} (all of its features)",
                )
            picked.add((view_name, feature))
        if service.logging is not None:
            self._logging(origin, obj, service)

    def _logging(self, origin: str, obj: str, service: FeatureService) -> None:
        assert service.logging is not None
        try:
            service.logging.to_proto(obj)
        except DefinitionError as exc:
            self.add(origin, obj, exc.message.removeprefix(f"{obj}: "))
            return
        if not service.logging.sample_rate:
            return
        for item in service.features:
            view = self.views.get(item if isinstance(item, str) else item.name)
            if view is None and isinstance(item, str):
                view = self.views.get(item.split(":", 1)[0])
            for entity in view.entities if view is not None else ():
                found = self.entities.get(entity if isinstance(entity, str) else entity.name)
                keys = found.typed_join_keys() if found is not None else ()
                for key in keys:
                    if key.name in FEATURE_LOG_COLUMNS:
                        self.add(
                            origin,
                            obj,
                            f"join key {key.name!r} is a column of the feature log "
                            f"({', '.join(FEATURE_LOG_COLUMNS)}); rename it or turn logging off",
                        )
                        return


def _no_file_message(root: Path, path: str) -> str:
    """Why a source path matches no file: where it was looked for, what is there."""
    absolute = Path(path).is_absolute()
    looked = Path(path) if absolute else root / path
    relative = "" if absolute else f"relative to the repository root {root}, "
    message = f"path {path!r} matches no file ({relative}looked for {looked})"
    folder = looked.parent
    while any(ch in folder.name for ch in "*?[") and folder != folder.parent:
        folder = folder.parent
    if folder.is_dir():
        near = sorted(p.name for p in folder.iterdir() if p.is_file())[:5]
        held = f"holds {', '.join(near)}" if near else "is empty"
        message += f"; {folder} {held}"
    else:
        message += f"; the folder {folder} does not exist"
    return message + ": generate the data (a repository's generate_data.py) or fix the path"


def _add_referenced(listed: list[Any], obj: Any) -> None:
    """Adds an object a view references directly unless it, or its equal, is listed."""
    if not any(other is obj or other == obj for other in listed):
        listed.append(obj)


def _timestamp_column(duck: str) -> bool:
    """Whether a column may be an event or created time: it fits TIMESTAMP, not a list."""
    column = duckdb_column_type(duck)
    return column.family != TypeFamily.LIST and duckdb_type_fits(_VT.VALUE_TYPE_TIMESTAMP, duck)
