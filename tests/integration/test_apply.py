"""`apply` and `plan` on small repositories with real Parquet/CSV files and real DuckDB."""

from __future__ import annotations

import importlib.util
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from skewless.core.config import load_repo_config
from skewless.core.errors import DefinitionError
from skewless.registry.apply import apply_definitions, apply_repo, plan_repo
from skewless.registry.definitions import (
    Entity,
    Feature,
    FeatureService,
    FeatureView,
    FileSource,
    JoinKey,
    RepoDefinitions,
)
from skewless.registry.registry_store import RegistryStore
from skewless.registry.validation import DefinitionProblemsError

ROOT = Path(__file__).resolve().parents[2]

DRIVERS_YAML = """\
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64, description: A driver.}
sources:
  - name: driver_src
    path: data/drivers.parquet
    timestamp_field: event_timestamp
    created_timestamp_field: created
feature_views:
  - name: driver_stats
    entities: [driver]
    source: driver_src
    ttl: 2d
    schedule: 1h
    owner: team@example.com
    features:
      - {name: conv_rate, type: FLOAT32, description: Share of offers accepted.}
      - {name: trips, type: INT64}
"""

CUSTOMERS_YAML = """\
entities:
  - name: customer
    join_keys: [{name: customer_id, value_type: STRING}]
sources:
  - {name: customer_src, path: data/customers.csv, timestamp_field: ts}
feature_views:
  - name: customer_profile
    entities: [customer]
    source: customer_src
    sql: SELECT customer_id, ts, balance * 2 AS balance FROM source
    features: [{name: balance, type: FLOAT64}]
feature_services:
  - {name: ranking, features: [driver_stats, "customer_profile:balance"]}
"""


def write_data(repo: Path) -> None:
    data = repo / "data"
    data.mkdir(parents=True, exist_ok=True)
    ts = pa.timestamp("us", tz="UTC")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    pq.write_table(
        pa.table(
            {
                "driver_id": pa.array([1, 2, 1], pa.int64()),
                "event_timestamp": pa.array([t0, t0, t0], ts),
                "created": pa.array([t0, None, t0], ts),
                "conv_rate": pa.array([0.5, None, 0.7], pa.float32()),
                "trips": pa.array([3, 4, None], pa.int64()),
                "trips32": pa.array([3, 4, 5], pa.int32()),
            }
        ),
        data / "drivers.parquet",
    )
    (data / "customers.csv").write_text(
        "customer_id,ts,balance\nc1,2026-01-01 00:00:00,1.5\nc2,2026-01-02 00:00:00,\n"
    )


def make_repo(tmp_path: Path, files: dict[str, str] | None = None) -> Path:
    """A valid two-file repository; `files` adds or replaces definition files."""
    repo = tmp_path / "repo"
    (repo / "features").mkdir(parents=True)
    (repo / "skewless.yaml").write_text("project: test\n")
    write_data(repo)
    contents = {"features/drivers.yaml": DRIVERS_YAML, "features/customers.yaml": CUSTOMERS_YAML}
    contents.update(files or {})
    for name, text in contents.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    return repo


def edit(name: str, old: str, new: str) -> dict[str, str]:
    """Replaces `old` by `new` in one of the base files (which must contain it)."""
    base = {"features/drivers.yaml": DRIVERS_YAML, "features/customers.yaml": CUSTOMERS_YAML}
    assert old in base[name], old
    return {name: base[name].replace(old, new)}


D, C = "features/drivers.yaml", "features/customers.yaml"
VIEW_D, VIEW_C = "feature view 'driver_stats'", "feature view 'customer_profile'"

BAD_CASES = [
    (
        "unknown-entity",
        edit(D, "entities: [driver]", "entities: [drivr]"),
        [D, VIEW_D, "unknown entity 'drivr'; known: customer, driver"],
    ),
    (
        "unknown-source",
        edit(D, "source: driver_src", "source: nope"),
        [D, VIEW_D, "unknown source 'nope'"],
    ),
    (
        "unknown-view-in-service",
        edit(C, "[driver_stats,", "[driver_statz,"),
        [C, "feature service 'ranking'", "unknown feature view 'driver_statz'"],
    ),
    (
        "unknown-feature-in-service",
        edit(C, '"customer_profile:balance"', '"customer_profile:balanse"'),
        [C, "feature service 'ranking'", "has no feature 'balanse'"],
    ),
    (
        "duplicate-across-files",
        {
            "features/more/dup.yaml": "entities:\n"
            "  - {name: driver, join_keys: [driver_id], value_type: INT64}\n"
        },
        [
            "features/more/dup.yaml",
            "entity 'driver'",
            "duplicate entity name 'driver' (also defined in features/drivers.yaml)",
        ],
    ),
    (
        "duplicate-feature",
        edit(D, "{name: trips, type: INT64}", "{name: conv_rate, type: FLOAT32}"),
        [D, VIEW_D, "feature 'conv_rate' is listed twice"],
    ),
    (
        "unsafe-identifier",
        edit(D, "name: driver_stats", "name: Driver-Stats"),
        [D, "feature view 'Driver-Stats'", "name 'Driver-Stats' is not a safe identifier"],
    ),
    (
        "unsafe-join-key",
        edit(
            C, "{name: customer_id, value_type: STRING}", "{name: customer id, value_type: STRING}"
        ),
        [C, "entity 'customer'", "join key 'customer id' is not a safe identifier"],
    ),
    (
        "name-too-long",
        edit(D, "name: driver_stats", "name: " + "v" * 64),
        [D, "v" * 64, "at most 63 characters"],
    ),
    (
        "reserved-feature-name",
        edit(D, "{name: trips, type: INT64}", "{name: created_timestamp, type: TIMESTAMP}"),
        [D, VIEW_D, "feature 'created_timestamp' is reserved"],
    ),
    (
        "unknown-type",
        edit(D, "type: FLOAT32,", "type: FLOAT128,"),
        [D, VIEW_D, "feature 'conv_rate': unknown type 'FLOAT128'"],
    ),
    (
        "key-type-not-allowed",
        edit(D, "value_type: INT64", "value_type: FLOAT64"),
        [D, "entity 'driver'", "join key 'driver_id' has type FLOAT64, which cannot be a key"],
    ),
    (
        "key-without-type",
        edit(D, ", value_type: INT64,", ","),
        [D, "entity 'driver'", "join key 'driver_id' has no type"],
    ),
    ("bad-ttl", edit(D, "ttl: 2d", "ttl: 2days"), [D, VIEW_D, "ttl: bad duration '2days'"]),
    (
        "bad-schedule",
        edit(D, "schedule: 1h", "schedule: 5"),
        [D, VIEW_D, "schedule: bad duration 5: a number needs a unit"],
    ),
    (
        "path-matches-nothing",
        edit(D, "data/drivers.parquet", "data/missing/*.parquet"),
        [D, "source 'driver_src'", "path 'data/missing/*.parquet' matches no file"],
    ),
    (
        "unknown-format",
        edit(D, "data/drivers.parquet", "data/drivers.txt"),
        [D, "source 'driver_src'", "cannot tell the format of 'data/drivers.txt'"],
    ),
    (
        "sql-does-not-bind",
        edit(C, "balance * 2 AS", "balanse * 2 AS"),
        [C, VIEW_C, "DuckDB cannot bind the sql against source 'customer_src'", "balanse"],
    ),
    (
        "sql-not-select",
        edit(
            C,
            "sql: SELECT customer_id, ts, balance * 2 AS balance FROM source",
            "sql: DELETE FROM source",
        ),
        [C, VIEW_C, "sql must be exactly one SELECT statement"],
    ),
    (
        "sql-two-statements",
        edit(C, "FROM source\n", "FROM source; SELECT 1\n"),
        [C, VIEW_C, "sql must be exactly one SELECT statement"],
    ),
    (
        "sql-missing-feature",
        edit(C, "balance * 2 AS balance", "balance AS bal"),
        [C, VIEW_C, "the sql output has no column for feature 'balance'"],
    ),
    (
        "sql-missing-join-key",
        edit(C, "SELECT customer_id, ts,", "SELECT ts,"),
        [C, VIEW_C, "the sql output has no column for join key 'customer_id'"],
    ),
    (
        "sql-missing-timestamp",
        edit(C, "SELECT customer_id, ts,", "SELECT customer_id,"),
        [C, VIEW_C, "the sql output has no column 'ts' (the source's timestamp_field)"],
    ),
    (
        "timestamp-not-a-timestamp",
        edit(C, "SELECT customer_id, ts,", "SELECT customer_id, 'x' AS ts,"),
        [C, VIEW_C, "column 'ts' of the sql output is VARCHAR (times stored as text), not a"],
    ),
    (
        "string-for-int64",
        edit(D, "{name: trips, type: INT64}", "{name: trips, type: STRING}"),
        [
            D,
            VIEW_D,
            "feature 'trips' is declared STRING (DuckDB VARCHAR) "
            "but source 'driver_src' has it as BIGINT",
        ],
    ),
    (
        "feature-column-missing",
        edit(D, "{name: trips, type: INT64}", "{name: rides, type: INT64}"),
        [D, VIEW_D, "source 'driver_src' has no column for feature 'rides'"],
    ),
    (
        "unknown-field",
        edit(D, "    ttl: 2d\n", "    ttl: 2d\n    tll: 3d\n"),
        [D, VIEW_D, "unknown field(s) 'tll'"],
    ),
    (
        "missing-required-field",
        edit(D, "    source: driver_src\n", ""),
        [D, VIEW_D, "missing required field 'source'"],
    ),
    (
        "unknown-section",
        {"features/x.yaml": "feature_veiws: []\n"},
        ["features/x.yaml", "unknown section(s) 'feature_veiws'"],
    ),
    ("not-yaml", {"features/x.yaml": "entities: [\n"}, ["features/x.yaml", "not valid YAML"]),
    ("wrong-field-type", edit(D, "ttl: 2d", "ttl: [2d]"), [D, VIEW_D, "'ttl' must be a duration"]),
    (
        "two-source-kinds",
        edit(C, "path: data/customers.csv,", "path: data/customers.csv, push: true,"),
        [C, "source 'customer_src'", "set only one of 'path', 'sql', 'delta' or 'push: true'"],
    ),
    (
        "shared-join-key",
        {
            "features/more/dup.yaml": "entities:\n"
            "  - {name: driver2, join_keys: [driver_id], value_type: INT64}\n"
        }
        | edit(D, "entities: [driver]", "entities: [driver, driver2]"),
        [D, VIEW_D, "join key 'driver_id' comes from two of its entities"],
    ),
    (
        "service-lists-view-twice",
        edit(C, '"customer_profile:balance"', "driver_stats"),
        [C, "feature service 'ranking'", "feature view 'driver_stats' is listed more than once"],
    ),
]


@pytest.mark.parametrize(
    ("files", "expected"), [(f, e) for _, f, e in BAD_CASES], ids=[c[0] for c in BAD_CASES]
)
def test_bad_definition_is_refused_with_file_object_and_problem(
    tmp_path: Path, files: dict[str, str], expected: list[str]
) -> None:
    repo = make_repo(tmp_path, files)
    with pytest.raises(DefinitionProblemsError) as info:
        apply_repo(repo)
    message = str(info.value)
    for part in expected:
        assert part in message, f"{part!r} not in:\n{message}"
    assert "nothing was applied" in message
    assert not (repo / ".skewless" / "registry.pb").exists()
    # Every problem line names a file; the listed problems are all in the message.
    assert info.value.problems
    for problem in info.value.problems:
        assert problem.file and str(problem) in message


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    files = edit(D, "entities: [driver]", "entities: [drivr]") | edit(
        C, "customer_id, ts,", "customer_id, tz,"
    )
    files[D] = files[D].replace("ttl: 2d", "ttl: forever")
    repo = make_repo(tmp_path, files)
    with pytest.raises(DefinitionError) as info:
        plan_repo(repo)
    message = str(info.value)
    assert message.startswith("3 problems in the feature definitions of ")
    assert "unknown entity 'drivr'" in message
    assert "ttl: bad duration 'forever'" in message
    assert 'Referenced column "tz" not found' in message
    assert info.value.metadata["problem_count"] == "3"
    assert info.value.metadata["files"] == f"{C}, {D}"


def test_apply_round_trips_and_reapply_is_a_noop(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    planned = plan_repo(repo)
    assert not (repo / ".skewless").exists()  # plan writes nothing

    first = apply_repo(repo)
    assert first.changed and first.registry.version == 1
    stored = RegistryStore(load_repo_config(repo).registry_path).load()
    assert stored == first.registry
    body = type(stored)()
    body.CopyFrom(stored)
    for name in ("version", "update_time", "digest"):
        body.ClearField(name)
    assert body == planned

    assert [e.name for e in stored.entities] == ["customer", "driver"]
    assert [s.name for s in stored.data_sources] == ["customer_src", "driver_src"]
    view = next(v for v in stored.feature_views if v.name == "driver_stats")
    assert view.ttl.seconds == 2 * 86400 and view.schedule.seconds == 3600
    assert view.online and view.offline and view.owner == "team@example.com"
    assert [(f.name, f.value_type) for f in view.features] == [("conv_rate", 3), ("trips", 2)]
    customer = next(e for e in stored.entities if e.name == "customer")
    assert customer.join_keys[0].name == "customer_id" and customer.join_keys[0].value_type == 5
    (service,) = stored.feature_services
    assert [(p.feature_view, list(p.features)) for p in service.projections] == [
        ("driver_stats", []),
        ("customer_profile", ["balance"]),
    ]

    path = repo / ".skewless" / "registry.pb"
    mtime = path.stat().st_mtime_ns
    again = apply_repo(repo)
    assert not again.changed and again.registry.version == 1
    assert path.stat().st_mtime_ns == mtime

    (repo / D).write_text(DRIVERS_YAML.replace("ttl: 2d", "ttl: 3d"))
    changed = apply_repo(repo)
    assert changed.changed and changed.registry.version == 2
    assert RegistryStore(path).load().version == 2  # type: ignore[union-attr]


def test_bad_apply_keeps_the_stored_registry(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    apply_repo(repo)
    path = repo / ".skewless" / "registry.pb"
    before = path.read_bytes()
    (repo / D).write_text(DRIVERS_YAML.replace("ttl: 2d", "ttl: 2 days"))
    with pytest.raises(DefinitionProblemsError):
        apply_repo(repo)
    assert path.read_bytes() == before


def python_definitions() -> RepoDefinitions:
    driver = Entity(
        name="driver", join_keys=("driver_id",), value_type="INT64", description="A driver."
    )
    customer = Entity(name="customer", join_keys=(JoinKey("customer_id", "STRING"),))
    driver_src = FileSource(
        name="driver_src", path="data/drivers.parquet", created_timestamp_field="created"
    )
    customer_src = FileSource(name="customer_src", path="data/customers.csv", timestamp_field="ts")
    driver_stats = FeatureView(
        name="driver_stats",
        entities=(driver,),
        source=driver_src,
        ttl="2d",
        schedule="1h",
        owner="team@example.com",
        features=(
            Feature("conv_rate", "FLOAT32", description="Share of offers accepted."),
            Feature("trips", "INT64"),
        ),
    )
    customer_profile = FeatureView(
        name="customer_profile",
        entities=("customer",),
        source="customer_src",
        sql="SELECT customer_id, ts, balance * 2 AS balance FROM source",
        features=(Feature("balance", "FLOAT64"),),
    )
    return RepoDefinitions(
        entities=(customer,),
        sources=(customer_src,),
        feature_views=(customer_profile, driver_stats),
        feature_services=(
            FeatureService("ranking", features=(driver_stats, "customer_profile:balance")),
        ),
    )


def test_python_api_builds_the_same_registry_as_yaml(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    from_yaml = apply_repo(repo)
    from_python = apply_definitions(load_repo_config(repo), python_definitions())
    assert not from_python.changed  # same digest: nothing to write
    assert from_python.registry == from_yaml.registry


def test_python_api_is_validated_too(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    defs = python_definitions()
    bad = RepoDefinitions(
        entities=defs.entities,
        sources=defs.sources,
        feature_views=(
            *defs.feature_views,
            FeatureView("x", ("rider",), "customer_src", (Feature("balance", "FLOAT64"),)),
        ),
    )
    with pytest.raises(DefinitionProblemsError) as info:
        apply_definitions(load_repo_config(repo), bad)
    assert "<python>: feature view 'x': unknown entity 'rider'" in str(info.value)


def test_sql_source_reads_file_sources_by_name(tmp_path: Path) -> None:
    sql_yaml = """\
sources:
  - name: busy_drivers
    sql: SELECT driver_id, event_timestamp, trips FROM driver_src WHERE trips > 3
feature_views:
  - name: busy
    entities: [driver]
    source: busy_drivers
    features: [{name: trips, type: INT64}]
  - name: pushed
    entities: [driver]
    source: pushes
    features: [{name: score, type: FLOAT64}]
sources_extra: null
"""
    files = {"features/sql.yaml": sql_yaml.replace("sources_extra: null\n", "")}
    files["features/push.yaml"] = "sources:\n  - {name: pushes, type: push}\n"
    repo = make_repo(tmp_path, files)
    registry = plan_repo(repo)
    sources = {s.name: s.WhichOneof("kind") for s in registry.data_sources}
    assert sources == {
        "busy_drivers": "sql",
        "customer_src": "file",
        "driver_src": "file",
        "pushes": "push",
    }
    assert [v.name for v in registry.feature_views] == [
        "busy",
        "customer_profile",
        "driver_stats",
        "pushed",
    ]

    broken = dict(files)
    broken["features/sql.yaml"] = files["features/sql.yaml"].replace("trips > 3", "tripz > 3")
    with pytest.raises(DefinitionProblemsError) as info:
        plan_repo(make_repo(tmp_path / "b", broken))
    assert "features/sql.yaml: source 'busy_drivers': DuckDB cannot bind the sql" in str(info.value)


def test_example_repository_applies(tmp_path: Path) -> None:
    example = ROOT / "examples" / "rides"
    repo = tmp_path / "rides"
    shutil.copytree(example, repo, ignore=shutil.ignore_patterns("data", ".skewless"))
    spec = importlib.util.spec_from_file_location("generate_data", repo / "generate_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    counts = module.generate(repo / "data")
    assert counts["orders"] == 500
    first = (repo / "data" / "driver_stats.parquet").read_bytes()
    module.generate(repo / "data")
    assert (repo / "data" / "driver_stats.parquet").read_bytes() == first  # deterministic

    drivers = pq.read_table(repo / "data" / "driver_stats.parquet")
    assert len(set(drivers.column("driver_id").to_pylist())) == 200
    assert drivers.column("conv_rate").null_count > 0
    customers = pq.read_table(repo / "data" / "customer_profile.parquet")
    assert len(set(customers.column("customer_id").to_pylist())) == 100

    result = apply_repo(repo)
    assert result.changed and result.registry.project == "rides"
    assert [v.name for v in result.registry.feature_views] == ["customer_profile", "driver_stats"]
    assert [s.name for s in result.registry.feature_services] == ["driver_ranking"]
    view = next(v for v in result.registry.feature_views if v.name == "driver_stats")
    assert view.ttl.seconds == 2 * 86400 and view.schedule.seconds == 3600
    assert [f.name for f in view.features] == ["conv_rate", "acc_rate", "avg_daily_trips"]


@pytest.mark.parametrize(
    ("column", "declared"),
    [
        ("trips32", "INT64"),  # INTEGER stored as INT64: a widening
        ("conv_rate", "FLOAT64"),  # FLOAT stored as FLOAT64
        ("trips", "FLOAT32"),  # BIGINT stored as FLOAT32
    ],
)
def test_apply_accepts_what_materialization_stores(
    tmp_path: Path, redis_url: str, column: str, declared: str
) -> None:
    """`apply` and materialization share one type rule: what one accepts, the other does."""
    from skewless.materialization.pipeline import materialize
    from skewless.offline.offline_store import history_files

    view = f"""\
entities:
  - {{name: driver, join_keys: [driver_id], value_type: INT64}}
sources:
  - {{name: driver_src, path: data/drivers.parquet, timestamp_field: event_day}}
feature_views:
  - name: cast_view
    entities: [driver]
    source: driver_src
    sql: SELECT driver_id, CAST(event_timestamp AS DATE) AS event_day, {column} FROM source
    features: [{{name: {column}, type: {declared}}}]
"""
    repo = make_repo(tmp_path, {"features/drivers.yaml": view, "features/customers.yaml": ""})
    (repo / "skewless.yaml").write_text(
        f"project: test\nonline_store: {{redis_url: '{redis_url}'}}\n"
    )
    registry = apply_repo(repo).registry  # a DATE timestamp field is accepted too
    config = load_repo_config(repo)
    result = materialize(
        config, registry, datetime(2025, 12, 31, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    )
    assert result.rows_read == 3
    stored = pa.concat_tables(pq.read_table(f) for f in history_files(config, "cast_view"))
    source = pq.read_table(repo / "data" / "drivers.parquet")

    def rows(table: pa.Table) -> list[tuple[int, float | None]]:
        pairs = zip(
            table.column("driver_id").to_pylist(), table.column(column).to_pylist(), strict=True
        )
        return sorted(pairs, key=lambda r: (r[0], r[1] is None, r[1] or 0))

    got, want = rows(stored), rows(source)
    assert [g[0] for g in got] == [w[0] for w in want]
    assert [g[1] for g in got] == pytest.approx([w[1] for w in want])
    assert set(stored.column("event_timestamp").to_pylist()) == {datetime(2026, 1, 1, tzinfo=UTC)}
