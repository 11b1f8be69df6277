"""The Python definitions API, the YAML loader and the checks that need no data."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from skewless.core.errors import DefinitionError
from skewless.registry.definitions import (
    Entity,
    Feature,
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
from skewless.registry.repo_loader import load_definitions
from skewless.registry.validation import (
    DefinitionProblem,
    DefinitionProblemsError,
    is_identifier,
    quote_identifier,
    raise_for_problems,
    validate_definitions,
)
from skewless.v1 import registry_pb2, types_pb2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(weeks=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        (" 2D ", timedelta(days=2)),
        ("0", timedelta(0)),
        (0, timedelta(0)),
        (None, timedelta(0)),
        (timedelta(hours=3), timedelta(hours=3)),
    ],
)
def test_parse_duration_accepts(text: object, expected: timedelta) -> None:
    assert parse_duration(text) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text", ["2", "2days", "h", "-1h", "1.5h", "2d 3h", "", 3600, True, timedelta(seconds=-1)]
)
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)  # type: ignore[arg-type]


def test_value_types_by_name_alias_or_number() -> None:
    assert resolve_value_type("INT64") == types_pb2.VALUE_TYPE_INT64
    assert resolve_value_type("double") == types_pb2.VALUE_TYPE_FLOAT64
    assert resolve_value_type(types_pb2.VALUE_TYPE_STRING_LIST) == 15
    for bad in ("FLOAT128", "UNSPECIFIED", 0, 99):
        with pytest.raises(ValueError, match="unknown type"):
            resolve_value_type(bad)


def test_file_format_from_extension_or_declaration() -> None:
    assert file_format_of("data/x.parquet") == registry_pb2.FILE_FORMAT_PARQUET
    assert file_format_of("data/**/*.CSV") == registry_pb2.FILE_FORMAT_CSV
    assert file_format_of("data/x.txt", "csv") == registry_pb2.FILE_FORMAT_CSV
    assert file_format_of("data/x.txt") is None
    assert file_format_of("data/x.parquet", "xls") is None


def test_identifiers() -> None:
    assert is_identifier("driver_stats") and is_identifier("_x1") and is_identifier("a" * 63)
    for bad in ("Driver", "1x", "a-b", "a b", "", "a" * 64, 'x"; drop'):
        assert not is_identifier(bad)
    assert quote_identifier("conv_rate") == '"conv_rate"'
    with pytest.raises(ValueError, match="refusing"):
        quote_identifier('x" OR 1=1 --')


def test_entity_join_keys_take_the_entity_type_unless_typed() -> None:
    entity = Entity("trip", join_keys=("driver_id", JoinKey("city", "STRING")), value_type="INT64")
    proto = entity.to_proto()
    assert [(k.name, k.value_type) for k in proto.join_keys] == [("driver_id", 2), ("city", 5)]
    with pytest.raises(DefinitionError, match="join key 'x' has no type"):
        Entity("e", join_keys=("x",)).to_proto()


def test_feature_service_groups_projections_by_view_in_first_mention_order() -> None:
    view = FeatureView("c", ("e",), "s", (Feature("f", "INT64"),))
    service = FeatureService("svc", features=("b:x", "a", "b:y", view, "b:x"))
    proto = service.to_proto()
    assert [(p.feature_view, list(p.features)) for p in proto.projections] == [
        ("b", ["x", "y"]),
        ("a", []),
        ("c", []),
    ]


def test_sources_to_proto() -> None:
    file_proto = FileSource("s", path="data/x.csv", created_timestamp_field="created").to_proto()
    assert file_proto.WhichOneof("kind") == "file"
    assert file_proto.file.format == registry_pb2.FILE_FORMAT_CSV
    assert file_proto.timestamp_field == "event_timestamp"
    assert SqlSource("q", query="SELECT 1").to_proto().sql.query == "SELECT 1"
    assert PushSource("p", timestamp_field="ts").to_proto().WhichOneof("kind") == "push"
    with pytest.raises(DefinitionError, match="cannot tell the format"):
        FileSource("s", path="data/x").to_proto()


def test_view_to_proto_defaults_and_bad_values() -> None:
    view = FeatureView("v", ("e",), "s", (Feature("f", "FLOAT32"),), ttl="1h30m")
    proto = view.to_proto()
    assert proto.ttl.seconds == 5400 and not proto.HasField("schedule")
    assert proto.online and proto.offline and proto.sql == ""
    with pytest.raises(DefinitionError, match="feature view 'v': schedule: bad duration"):
        FeatureView("v", ("e",), "s", (Feature("f", "INT64"),), schedule="soon").to_proto()
    with pytest.raises(DefinitionError, match="unknown type 'REAL'"):
        FeatureView("v", ("e",), "s", (Feature("f", "REAL"),)).to_proto()


def test_registry_is_sorted_and_includes_objects_referenced_by_views() -> None:
    driver = Entity("driver", join_keys=("driver_id",), value_type="INT64")
    src = PushSource("pushes")
    defs = RepoDefinitions(
        feature_views=(
            FeatureView("zeta", (driver,), src, (Feature("a", "INT64"),)),
            FeatureView("alpha", (driver,), src, (Feature("b", "INT64"),)),
        ),
        feature_services=(FeatureService("s2", ("zeta",)), FeatureService("s1", ("alpha:b",))),
    )
    registry = defs.to_registry("p")
    assert [e.name for e in registry.entities] == ["driver"]
    assert [s.name for s in registry.data_sources] == ["pushes"]
    assert [v.name for v in registry.feature_views] == ["alpha", "zeta"]
    assert [s.name for s in registry.feature_services] == ["s1", "s2"]
    assert validate_definitions(defs) == []


YAML = """\
entities:
  - name: driver
    join_keys: [driver_id, {name: city, value_type: STRING}]
    value_type: INT64
    tags: {tier: 1, pii: false}
sources:
  - {name: stats, path: data/stats.parquet, created_timestamp_field: created, owner: de}
  - {name: pushed, push: true, timestamp_field: ts}
  - {name: joined, sql: "SELECT * FROM stats", description: All stats.}
feature_views:
  - name: driver_stats
    entities: [driver]
    source: stats
    ttl: 2d
    schedule: 15m
    online: false
    features:
      - {name: conv_rate, type: FLOAT32, description: Rate.}
      - {name: tags, value_type: STRING_LIST, tags: {kind: text}}
feature_services:
  - {name: ranking, features: [driver_stats, "driver_stats:conv_rate"], owner: ml}
"""


def python_twin() -> RepoDefinitions:
    driver = Entity(
        "driver",
        join_keys=("driver_id", JoinKey("city", "STRING")),
        value_type="INT64",
        tags={"tier": "1", "pii": "false"},
    )
    stats = FileSource(
        "stats", path="data/stats.parquet", created_timestamp_field="created", owner="de"
    )
    return RepoDefinitions(
        entities=(driver,),
        sources=(
            stats,
            PushSource("pushed", timestamp_field="ts"),
            SqlSource("joined", query="SELECT * FROM stats", description="All stats."),
        ),
        feature_views=(
            FeatureView(
                "driver_stats",
                entities=(driver,),
                source=stats,
                ttl=timedelta(days=2),
                schedule="15m",
                online=False,
                features=(
                    Feature("conv_rate", "FLOAT32", description="Rate."),
                    Feature("tags", types_pb2.VALUE_TYPE_STRING_LIST, tags={"kind": "text"}),
                ),
            ),
        ),
        feature_services=(
            FeatureService("ranking", ("driver_stats", "driver_stats:conv_rate"), owner="ml"),
        ),
    )


def test_yaml_and_python_api_give_equal_protos(tmp_path: Path) -> None:
    (tmp_path / "features" / "sub").mkdir(parents=True)
    (tmp_path / "features" / "sub" / "all.yml").write_text(YAML)
    (tmp_path / "features" / ".#all.yml").write_text("not: [valid")  # editor files are skipped
    (tmp_path / "features" / "notes.txt").write_text("entities: 1")
    loaded = load_definitions(tmp_path)
    assert loaded.problems == ()
    assert loaded.files == ("features/sub/all.yml",)
    assert {e.origin for e in loaded.definitions.entities} == {"features/sub/all.yml"}
    assert loaded.definitions.to_registry("p") == python_twin().to_registry("p")


def test_validation_without_data_finds_reference_and_name_problems() -> None:
    defs = RepoDefinitions(
        entities=(
            Entity("driver", ("driver_id",), "INT64", origin="a.yaml"),
            Entity("driver", ("id",), "INT64", origin="b.yaml"),
        ),
        sources=(PushSource("source", origin="a.yaml"),),
        feature_views=(
            FeatureView("v", ("rider",), "nope", (Feature("Bad", "INT64"),), origin="a.yaml"),
        ),
        feature_services=(FeatureService("s", ("v:x", "w", "v:"), origin="b.yaml"),),
    )
    problems = [str(p) for p in validate_definitions(defs)]
    assert problems == [
        "b.yaml: entity 'driver': duplicate entity name 'driver' (also defined in a.yaml); "
        "names must be unique in the project",
        "a.yaml: source 'source': the name 'source' is reserved for the relation a view's sql "
        "reads",
        "a.yaml: feature view 'v': unknown entity 'rider'; known: driver",
        "a.yaml: feature view 'v': unknown source 'nope'; known: none defined",
        "a.yaml: feature view 'v': feature 'Bad' is not a safe identifier: use lower-case "
        "letters, digits and _, starting with a letter or _, at most 63 characters",
        "b.yaml: feature service 's': feature view 'v' has no feature 'x'; its features: Bad",
        "b.yaml: feature service 's': unknown feature view 'w'; known: v",
        "b.yaml: feature service 's': bad item 'v:': write 'view' or 'view:feature'",
    ]


def test_raise_for_problems_lists_each_once_grouped_by_file() -> None:
    raise_for_problems([])
    p1 = DefinitionProblem("b.yaml", "entity 'x'", "one")
    p2 = DefinitionProblem("a.yaml", "", "two")
    with pytest.raises(DefinitionProblemsError) as info:
        raise_for_problems([p1, p2, p1], repo="/r")
    assert str(info.value) == (
        "2 problems in the feature definitions of /r; nothing was applied:\n"
        "  - a.yaml: two\n"
        "  - b.yaml: entity 'x': one"
    )
    assert info.value.problems == (p2, p1)
    assert info.value.reason == "INVALID_DEFINITION"
