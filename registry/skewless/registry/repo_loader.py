"""Reading a feature repository's definition files into `skewless.registry.definitions` objects.

Every `*.yaml` / `*.yml` file under `<repo>/features/` (at any depth, in path order) may
hold the top-level lists `entities`, `sources`, `feature_views` and `feature_services`.
The loader checks only the shape of what it reads (mappings, known keys, required
fields, scalar types) and records each object's file in its `origin`; everything that
needs the whole repository (names, references, types, SQL) is checked by
`skewless.registry.validation`. Problems are collected, never raised one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from skewless.core.names import EVENT_TIMESTAMP
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
from skewless.registry.validation import DefinitionProblem

__all__ = [
    "DEFINITIONS_DIR",
    "LoadedRepo",
    "definition_files",
    "load_definition_texts",
    "load_definitions",
]

#: The folder of a repository that holds the definition files.
DEFINITIONS_DIR = "features"

_SECTIONS = ("entities", "sources", "feature_views", "feature_services", "policies")
_COMMON = {"name", "description", "owner", "tags"}
_ENTITY_KEYS = _COMMON | {"join_keys", "value_type"}
_JOIN_KEY_KEYS = {"name", "value_type"}
_SOURCE_KEYS = _COMMON | {
    "type",
    "path",
    "delta",
    "version",
    "format",
    "sql",
    "push",
    "timestamp_field",
    "created_timestamp_field",
}
_VIEW_KEYS = _COMMON | {
    "entities",
    "source",
    "features",
    "sql",
    "ttl",
    "schedule",
    "online",
    "offline",
    "offline_retention",
}
_FEATURE_KEYS = {"name", "type", "value_type", "description", "tags"}
_SERVICE_KEYS = _COMMON | {"features", "logging"}
_LOGGING_KEYS = {"sample_rate", "report_schedule"}
_POLICY_KEYS = {"name", "description", "subjects", "groups", "actions", "resources"}
_SOURCE_TYPES = ("file", "sql", "push", "delta")


@dataclass(frozen=True)
class LoadedRepo:
    """What the definition files of a repository hold.

    Attributes:
        definitions: The objects that could be read (possibly with invalid values).
        problems: Shape problems found while reading, in file order.
        files: The definition files read, relative to the repository root.

    """

    definitions: RepoDefinitions
    problems: tuple[DefinitionProblem, ...]
    files: tuple[str, ...]


def definition_files(root: Path) -> list[Path]:
    """Returns the definition files of a repository, sorted by path (hidden ones skipped)."""
    folder = root / DEFINITIONS_DIR
    if not folder.is_dir():
        return []
    files = [
        p
        for p in folder.rglob("*")
        if p.suffix in (".yaml", ".yml")
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    return sorted(files)


def load_definitions(root: Path) -> LoadedRepo:
    """Reads every definition file of a repository.

    Args:
        root: The repository folder (the one holding `skewless.yaml`).

    Returns:
        The objects read and the problems met; the caller decides whether to raise.

    """
    reader = _Reader()
    names: list[str] = []
    for path in definition_files(root):
        origin = path.relative_to(root).as_posix()
        names.append(origin)
        reader.read_file(path, origin)
    return LoadedRepo(
        definitions=RepoDefinitions(
            entities=tuple(reader.entities),
            sources=tuple(reader.sources),
            feature_views=tuple(reader.views),
            feature_services=tuple(reader.services),
            policies=tuple(reader.policies),
        ),
        problems=tuple(reader.problems),
        files=tuple(names),
    )


class _NoAliasLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses aliases (`*name`), which can multiply a small text."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not accepted here", event.start_mark
            )
        return super().compose_node(parent, index)


def load_definition_texts(files: Mapping[str, str]) -> LoadedRepo:
    """Reads definition files sent as text (over the API), as `load_definitions` reads a folder.

    YAML aliases are refused (a few bytes of them can expand into millions of objects).

    Args:
        files: Path relative to the repository (`features/drivers.yaml`) -> YAML text;
            read in path order.

    Returns:
        The objects read and the problems met; the caller decides whether to raise.

    """
    reader = _Reader(loader=_NoAliasLoader)
    for origin in sorted(files):
        reader.read_text(files[origin], origin)
    return LoadedRepo(
        definitions=RepoDefinitions(
            entities=tuple(reader.entities),
            sources=tuple(reader.sources),
            feature_views=tuple(reader.views),
            feature_services=tuple(reader.services),
        ),
        problems=tuple(reader.problems),
        files=tuple(sorted(files)),
    )


class _Fields:
    """Typed access to one YAML mapping, recording problems against its object."""

    def __init__(
        self, raw: dict[Any, Any], origin: str, obj: str, problems: list[DefinitionProblem]
    ) -> None:
        self.raw = raw
        self.origin = origin
        self.obj = obj
        self.problems = problems
        self.ok = True

    def problem(self, message: str) -> None:
        self.ok = False
        self.problems.append(DefinitionProblem(self.origin, self.obj, message))

    def check_keys(self, allowed: set[str]) -> None:
        unknown = sorted(str(k) for k in self.raw if k not in allowed)
        if unknown:
            self.problem(
                f"unknown field(s) {', '.join(repr(k) for k in unknown)}; "
                f"allowed: {', '.join(sorted(allowed))}"
            )

    def _typed(self, key: str, kinds: tuple[type, ...], label: str, required: bool) -> Any:
        if key not in self.raw or self.raw[key] is None:
            if required:
                self.problem(f"missing required field {key!r}")
            return None
        value = self.raw[key]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            self.problem(f"{key!r} must be {label}, got {type(value).__name__} {value!r}")
            return None
        return value

    def text(self, key: str, *, required: bool = False, default: str = "") -> str:
        value = self._typed(key, (str,), "a string", required)
        return default if value is None else str(value).strip()

    def flag(self, key: str, *, default: bool) -> bool:
        value = self._typed(key, (bool,), "true or false", False)
        return default if value is None else bool(value)

    def items(self, key: str, *, required: bool = False) -> list[Any]:
        value = self._typed(key, (list,), "a list", required)
        if value is not None and not value and required:
            self.problem(f"missing required field {key!r}")
        return value or []

    def names(self, key: str, *, required: bool = False) -> tuple[str, ...]:
        out = []
        for i, item in enumerate(self.items(key, required=required)):
            if isinstance(item, str):
                out.append(item.strip())
            else:
                self.problem(f"{key}[{i}] must be a name (string), got {item!r}")
        return tuple(out)

    def duration(self, key: str) -> str | int | None:
        value = self._typed(key, (str, int), "a duration such as 90s, 2h or 2d", False)
        return value if isinstance(value, (str, int)) else None

    def tags(self) -> dict[str, str]:
        value = self._typed("tags", (dict,), "a mapping of names to values", False)
        if value is None:
            return {}
        out: dict[str, str] = {}
        for k, v in value.items():
            if not isinstance(k, str) or isinstance(v, (dict, list)):
                self.problem(f"tags must map names to plain values, got {k!r}: {v!r}")
                continue
            out[k] = "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
        return out


class _Reader:
    """Accumulates the objects and problems of all files."""

    def __init__(self, loader: type[yaml.SafeLoader] = yaml.SafeLoader) -> None:
        self.loader = loader
        self.entities: list[Entity] = []
        self.sources: list[DataSource] = []
        self.views: list[FeatureView] = []
        self.services: list[FeatureService] = []
        self.policies: list[Policy] = []
        self.problems: list[DefinitionProblem] = []

    def read_file(self, path: Path, origin: str) -> None:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            self.problems.append(
                DefinitionProblem(origin, "", f"not valid YAML: {_yaml_error(exc)}")
            )
            return
        self.read_text(text, origin)

    def read_text(self, text: str, origin: str) -> None:
        try:
            raw = yaml.load(text, Loader=self.loader)
        except RecursionError:
            self.problems.append(DefinitionProblem(origin, "", "not valid YAML: nested too deeply"))
            return
        except yaml.YAMLError as exc:
            self.problems.append(
                DefinitionProblem(origin, "", f"not valid YAML: {_yaml_error(exc)}")
            )
            return
        if raw is None:
            return
        if not isinstance(raw, dict):
            self.problems.append(
                DefinitionProblem(
                    origin, "", f"expected a mapping with {', '.join(_SECTIONS)} at the top level"
                )
            )
            return
        unknown = sorted(str(k) for k in raw if k not in _SECTIONS)
        if unknown:
            self.problems.append(
                DefinitionProblem(
                    origin,
                    "",
                    f"unknown section(s) {', '.join(repr(k) for k in unknown)}; "
                    f"allowed: {', '.join(_SECTIONS)}",
                )
            )
        readers: dict[str, tuple[str, Callable[[_Fields], None]]] = {
            "entities": ("entity", self._entity),
            "sources": ("source", self._source),
            "feature_views": ("feature view", self._view),
            "feature_services": ("feature service", self._service),
            "policies": ("policy", self._policy),
        }
        for section, (kind, read) in readers.items():
            items = raw.get(section)
            if items is None:
                continue
            if not isinstance(items, list):
                self.problems.append(
                    DefinitionProblem(origin, "", f"{section!r} must be a list of mappings")
                )
                continue
            for i, item in enumerate(items):
                label = f"{kind} #{i + 1}"
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    label = f"{kind} {item['name']!r}"
                if not isinstance(item, dict):
                    self.problems.append(
                        DefinitionProblem(
                            origin, label, f"must be a mapping, got {type(item).__name__}"
                        )
                    )
                    continue
                read(_Fields(item, origin, label, self.problems))

    def _entity(self, f: _Fields) -> None:
        f.check_keys(_ENTITY_KEYS)
        name = f.text("name", required=True)
        keys: list[str | JoinKey] = []
        for i, item in enumerate(f.items("join_keys", required=True)):
            if isinstance(item, str):
                keys.append(item.strip())
            elif isinstance(item, dict):
                sub = _Fields(item, f.origin, f"{f.obj}, join key #{i + 1}", f.problems)
                sub.check_keys(_JOIN_KEY_KEYS)
                key_name = sub.text("name", required=True)
                key_type = sub.text("value_type") or None
                if sub.ok:
                    keys.append(JoinKey(key_name, key_type))
            else:
                f.problem(f"join_keys[{i}] must be a name or a {{name, value_type}} mapping")
        if not name:
            return
        self.entities.append(
            Entity(
                name=name,
                join_keys=tuple(keys),
                value_type=f.text("value_type") or None,
                description=f.text("description"),
                owner=f.text("owner"),
                tags=f.tags(),
                origin=f.origin,
            )
        )

    def _source(self, f: _Fields) -> None:
        f.check_keys(_SOURCE_KEYS)
        name = f.text("name", required=True)
        declared = f.text("type").lower() or None
        if declared is not None and declared not in _SOURCE_TYPES:
            f.problem(f"unknown source type {declared!r}; use one of {', '.join(_SOURCE_TYPES)}")
            declared = None
        kinds = [k for k in ("path", "sql", "delta") if f.raw.get(k) is not None]
        if f.flag("push", default=False) or declared == "push":
            kinds.append("push")
        inferred = {"path": "file", "sql": "sql", "push": "push", "delta": "delta"}
        if len(kinds) > 1:  # reported; read as the first kind so views are still checked
            f.problem(
                f"set only one of 'path', 'sql', 'delta' or 'push: true', got {', '.join(kinds)}"
            )
        if not kinds:
            f.problem(
                "missing required field: one of 'path' (file source), 'sql', 'delta' (a Delta "
                "table folder) or 'push: true'"
            )
            return
        kind = inferred[kinds[0]]
        if declared is not None and declared != kind:
            f.problem(f"type is {declared!r} but the fields describe a {kind} source")
            return
        if kind != "file" and f.raw.get("format") is not None:
            f.problem("'format' applies only to file sources (with 'path')")
        version = f.raw.get("version")
        if version is not None and (
            kind != "delta" or not isinstance(version, int) or isinstance(version, bool)
        ):
            f.problem("'version' is a whole number and applies only to Delta sources ('delta')")
            version = None
        common: dict[str, Any] = {
            "name": name,
            "timestamp_field": f.text("timestamp_field", default=EVENT_TIMESTAMP),
            "created_timestamp_field": f.text("created_timestamp_field"),
            "description": f.text("description"),
            "owner": f.text("owner"),
            "tags": f.tags(),
            "origin": f.origin,
        }
        if not name:
            return
        source: DataSource
        if kind == "file":
            source = FileSource(path=f.text("path"), format=f.text("format") or None, **common)
        elif kind == "sql":
            source = SqlSource(query=f.text("sql"), **common)
        elif kind == "delta":
            source = DeltaSource(path=f.text("delta"), version=version, **common)
        else:
            source = PushSource(**common)
        self.sources.append(source)

    def _view(self, f: _Fields) -> None:
        f.check_keys(_VIEW_KEYS)
        name = f.text("name", required=True)
        features: list[Feature] = []
        for i, item in enumerate(f.items("features", required=True)):
            label = f"{f.obj}, feature #{i + 1}"
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                label = f"{f.obj}, feature {item['name']!r}"
            if not isinstance(item, dict):
                f.problem(f"features[{i}] must be a mapping with name and type")
                continue
            sub = _Fields(item, f.origin, label, f.problems)
            sub.check_keys(_FEATURE_KEYS)
            feature = _feature(sub)
            if feature is not None:
                features.append(feature)
        entities = f.names("entities", required=True)
        source = f.text("source", required=True)
        if not name:
            return
        self.views.append(
            FeatureView(
                name=name,
                entities=entities,
                source=source,
                features=tuple(features),
                sql=f.text("sql"),
                ttl=f.duration("ttl"),
                schedule=f.duration("schedule"),
                online=f.flag("online", default=True),
                offline=f.flag("offline", default=True),
                description=f.text("description"),
                owner=f.text("owner"),
                tags=f.tags(),
                offline_retention=f.duration("offline_retention"),
                origin=f.origin,
            )
        )

    def _policy(self, f: _Fields) -> None:
        policy = _read_policy(f)
        if policy is not None:
            self.policies.append(policy)

    def _service(self, f: _Fields) -> None:
        f.check_keys(_SERVICE_KEYS)
        name = f.text("name", required=True)
        features = f.names("features", required=True)
        logging = self._logging(f)
        if not name:
            return
        self.services.append(
            FeatureService(
                name=name,
                features=features,
                description=f.text("description"),
                owner=f.text("owner"),
                tags=f.tags(),
                logging=logging,
                origin=f.origin,
            )
        )

    def _logging(self, f: _Fields) -> FeatureLogging | None:
        raw = f.raw.get("logging")
        if raw is None:
            return None
        if not isinstance(raw, dict):
            f.problem("'logging' must be a mapping with sample_rate and report_schedule")
            return None
        sub = _Fields(raw, f.origin, f"{f.obj}, logging", f.problems)
        sub.check_keys(_LOGGING_KEYS)
        rate = sub.raw.get("sample_rate", 0.0)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)):
            sub.problem(f"'sample_rate' must be a number from 0 to 1, got {rate!r}")
            return None
        return FeatureLogging(
            sample_rate=float(rate), report_schedule=sub.duration("report_schedule")
        )


def _read_policy(f: _Fields) -> Policy | None:
    f.check_keys(_POLICY_KEYS)
    name = f.text("name", required=True)
    policy = Policy(
        name=name,
        description=f.text("description"),
        subjects=f.names("subjects"),
        groups=f.names("groups"),
        actions=f.names("actions", required=True),
        resources=f.names("resources", required=True),
        origin=f.origin,
    )
    return policy if name and f.ok else None


def _feature(f: _Fields) -> Feature | None:
    name = f.text("name", required=True)
    if "type" in f.raw and "value_type" in f.raw:
        f.problem("set 'type' or 'value_type', not both")
        return None
    key = "value_type" if "value_type" in f.raw else "type"
    value_type = f.text(key)
    if not value_type and f.raw.get(key) is None:
        f.problem("missing required field 'type'")
    if not f.ok:
        return None
    return Feature(
        name=name, value_type=value_type, description=f.text("description"), tags=f.tags()
    )


def _yaml_error(exc: Exception) -> str:
    """Returns a one-line description of a YAML error with its line and column."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    return " ".join(str(exc).split())
