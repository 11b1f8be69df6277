"""`skewless plan`, a safe `apply`, and `RegistryService.PlanRepository`, against a real
server, its embedded Redis and the offline store.

The scenario a newcomer meets: a view holds values, a feature's type changes. `plan`
flags it, `apply` refuses it, `apply --allow-breaking` starts a new generation of the
view's stored values, and the running server never answers the old bytes as the new
type: NOT_FOUND until the view is materialized again, then values of the new type,
online and in training data."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
import redis

from skewless.client import Client, InvalidArgumentError
from skewless.core.config import load_repo_config
from skewless.registry.registry_store import RegistryStore
from tests.integration.served import serve

CLI = [sys.executable, "-m", "skewless.cli"]
FEATURES = Path("features") / "features.yaml"
RETYPED_SQL = """  - name: user_activity
    sql: SELECT user_id, event_timestamp, CAST(clicks AS VARCHAR) AS clicks, spend FROM source
"""


def skewless(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=180, check=False
    )


def ok(*args: str, cwd: Path) -> str:
    done = skewless(*args, cwd=cwd)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def retype_clicks(repo: Path) -> str:
    """`clicks` becomes a STRING (cast in the view's sql); returns the new file text."""
    path = repo / FEATURES
    text = path.read_text()
    text = text.replace("  - name: user_activity\n", RETYPED_SQL, 1)
    text = text.replace("{name: clicks, type: INT64,", "{name: clicks, type: STRING,")
    path.write_text(text)
    return text


def wait_for_version(client: Client, version: int) -> None:
    deadline = time.monotonic() + 15
    while client.get_registry_info().version != version:
        assert time.monotonic() < deadline, "the server did not load the new registry"
        time.sleep(0.1)


def lookup(client: Client) -> tuple[list[object], list[str]]:
    online = client.get_online_features({"user_id": [1, 2]}, feature_service="user_model")
    return online.to_dict()["clicks"], online.statuses()["clicks"]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    ok("init", "repo", "--template", "minimal", cwd=tmp_path)
    root = tmp_path / "repo"
    ok("apply", cwd=root)
    ok("materialize-incremental", "--no-progress", cwd=root)
    return root


def test_a_breaking_type_change_never_serves_old_values_as_the_new_type(repo: Path) -> None:
    config = load_repo_config(repo)
    with serve(repo) as served, Client(served.target) as client:
        values, statuses = lookup(client)
        assert statuses == ["PRESENT", "PRESENT"] and all(isinstance(v, int) for v in values)

        retype_clicks(repo)
        planned = skewless("plan", cwd=repo)
        assert planned.returncode == 1, planned.stdout + planned.stderr
        assert "~ feature view 'user_activity'" in planned.stdout
        assert "features.clicks.value_type: INT64 -> STRING" in planned.stdout
        assert "BREAKING: feature 'clicks' changes type while the view holds values" in (
            planned.stdout
        )
        assert "materialize-incremental --views user_activity" in planned.stdout

        refused = skewless("apply", cwd=repo)
        assert refused.returncode == 2
        assert "1 breaking change(s); nothing was applied" in refused.stderr
        assert "--allow-breaking" in refused.stderr
        assert RegistryStore(config.storage).require().version == 1
        assert lookup(client)[1] == ["PRESENT", "PRESENT"]  # still the old definition

        applied = ok("apply", "--allow-breaking", cwd=repo)
        assert "registry version 2" in applied
        assert "materialize-incremental --views user_activity" in applied
        wait_for_version(client, 2)
        # The old generation's bytes are still in Redis, but never read as a STRING.
        values, statuses = lookup(client)
        assert statuses == ["NOT_FOUND", "NOT_FOUND"] and values == [None, None]
        url = next(line for line in served.lines if "started embedded redis-server" in line)
        old_keys = redis.Redis.from_url(url.split(" on ")[1].split()[0]).keys(
            "repo:user_activity:*"
        )
        assert len(old_keys) == 10

        # Training data reads the new generation only: nothing until materialized.
        rows = pa.table({"user_id": [1], "event_timestamp": [dt.datetime.now(dt.UTC)]})
        with pytest.raises(Exception, match="no offline history"):
            client.get_historical_features(rows, feature_service="user_model")

        ok("materialize-incremental", "--no-progress", cwd=repo)
        values, statuses = lookup(client)
        assert statuses == ["PRESENT", "PRESENT"]
        assert all(isinstance(v, str) and v.isdigit() for v in values), values
        training = client.get_historical_features(rows, feature_service="user_model")
        assert training.schema.field("clicks").type == pa.string()
        assert isinstance(training.column("clicks")[0].as_py(), str)

        assert "no changes" in ok("plan", cwd=repo)
        assert "no changes" in ok("apply", cwd=repo)


def test_plan_repository_over_grpc_gates_a_definitions_change(repo: Path) -> None:
    files = {FEATURES.as_posix(): (repo / FEATURES).read_text()}
    with serve(repo) as served, Client(served.target) as client:
        same = client.plan_repository(files)
        assert (same.registry_version, list(same.changes), same.breaking) == (1, [], False)

        proposed = {FEATURES.as_posix(): retype_clicks(repo)}
        plan = client.plan_repository(proposed)
        assert plan.breaking
        assert list(plan.rematerialize_feature_views) == ["user_activity"]
        (change,) = plan.changes
        assert change.name == "user_activity" and change.breaking_reasons
        fields = {f.field: (f.before, f.after) for f in change.field_changes}
        assert fields["features.clicks.value_type"] == ("INT64", "STRING")
        assert "sql" in fields
        # Nothing was written.
        assert client.get_registry_info().version == 1

        # `skewless plan --target` asks the server the same question, as a CI job would.
        remote = skewless("plan", "--target", served.target, cwd=repo)
        assert remote.returncode == 1, remote.stdout + remote.stderr
        assert "plan for project 'repo' against registry version 1:" in remote.stdout
        assert "features.clicks.value_type: INT64 -> STRING" in remote.stdout
        assert "BREAKING: feature 'clicks' changes type" in remote.stdout
        assert remote.stdout == skewless("plan", cwd=repo).stdout  # the same plan, locally

        # Definitions with problems: every problem in one INVALID_ARGUMENT, no server path.
        broken = {FEATURES.as_posix(): proposed[FEATURES.as_posix()].replace(
            "data/user_activity.parquet", "data/missing.parquet")}  # fmt: skip
        with pytest.raises(InvalidArgumentError) as info:
            client.plan_repository(broken)
        assert info.value.reason == "DEFINITIONS_INVALID"
        assert "'data/missing.parquet' matches no file" in info.value.message
        assert str(repo) not in info.value.message
        (repo / FEATURES).write_text(broken[FEATURES.as_posix()])
        remote = skewless("plan", "--target", served.target, cwd=repo)
        assert remote.returncode == 2
        assert "answered INVALID_ARGUMENT" in remote.stderr and "matches no file" in remote.stderr

        # YAML aliases (a few bytes that expand into millions of objects) and deep nesting.
        bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
        for text, said in ((bomb, "aliases (*name) are not accepted"), ("[" * 20000, "")):
            with pytest.raises(InvalidArgumentError) as info:
                client.plan_repository({"features/bad.yaml": text})
            assert info.value.reason == "DEFINITIONS_INVALID"
            assert said in info.value.message

        for path in ("../skewless.yaml", "/etc/x.yaml", "features/a.txt", "other/a.yaml"):
            with pytest.raises(InvalidArgumentError) as info:
                client.plan_repository({path: "entities: []\n"})
            assert info.value.reason == "INVALID_DEFINITION_PATH", path


def test_plan_on_the_spark_engine_warns_of_a_view_it_would_refuse(tmp_path: Path) -> None:
    ok("init", "repo", "--template", "minimal", cwd=tmp_path)
    root = tmp_path / "repo"
    with (root / "skewless.yaml").open("a") as config:
        config.write("offline:\n  engine: spark\n")
    path = root / FEATURES
    path.write_text(
        path.read_text().replace(
            "  - name: user_activity\n",
            "  - name: user_activity\n    sql: SELECT * FROM source LIMIT 10\n",
            1,
        )
    )
    done = skewless("plan", cwd=root)
    assert done.returncode == 0, done.stdout + done.stderr  # a warning, not a failure
    warnings = [line for line in done.stdout.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1, done.stdout
    assert "'user_activity'" in warnings[0] and "LIMIT" in warnings[0]
