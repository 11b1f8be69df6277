"""The first mistakes a newcomer makes get an error that says what to do, and exit code 2.

Each runs the real `skewless` command on a repository made by `skewless init`: a source
path that matches no file, event times stored as strings, no `redis-server` installed,
the gRPC port already taken, and a folder that is not a repository."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

CLI = [sys.executable, "-m", "skewless.cli"]
FEATURES = Path("features") / "features.yaml"


def skewless(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=120, env=env, check=False
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    done = skewless("init", "repo", "--template", "minimal", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return tmp_path / "repo"


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ")
    return " ".join(done.stderr.split())


def test_a_source_path_that_matches_no_file(repo: Path) -> None:
    path = repo / FEATURES
    path.write_text(path.read_text().replace("data/user_activity.parquet", "data/activity.parquet"))
    error = one_line_error(skewless("apply", cwd=repo))
    assert "source 'user_activity_source': path 'data/activity.parquet' matches no file" in error
    assert f"relative to the repository root {repo}, looked for {repo}/data/activity.parquet" in (
        error
    )
    assert f"{repo}/data holds user_activity.parquet" in error  # the file meant, probably
    assert "generate the data" in error

    (repo / "data" / "user_activity.parquet").unlink()
    (repo / "data").rmdir()
    error = one_line_error(skewless("apply", cwd=repo))
    assert f"the folder {repo}/data does not exist" in error


def test_event_times_stored_as_strings_and_the_suggested_fix(repo: Path) -> None:
    data = repo / "data" / "user_activity.parquet"
    table = pq.read_table(data)
    as_text = pc.strftime(table.column("event_timestamp"), format="%Y-%m-%dT%H:%M:%S")
    table = table.set_column(1, pa.field("event_timestamp", pa.string()), as_text)
    pq.write_table(table, data)
    error = one_line_error(skewless("apply", cwd=repo))
    assert (
        "column 'event_timestamp' of source 'user_activity_source' is VARCHAR (times stored "
        "as text), not a TIMESTAMP" in error
    )
    fix = (
        'SELECT * REPLACE (CAST("event_timestamp" AS TIMESTAMPTZ) AS "event_timestamp") FROM source'
    )
    assert f"give the view sql: {fix}" in error
    # Following the advice works.
    path = repo / FEATURES
    path.write_text(
        path.read_text().replace("    ttl: 1d\n", f"    ttl: 1d\n    sql: '{fix}'\n", 1)
    )
    done = skewless("apply", cwd=repo)
    assert done.returncode == 0, done.stderr


def test_no_redis_server_installed(repo: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SKEWLESS_REDIS_SERVER"}
    env["PATH"] = str(tmp_path / "empty-bin")  # no redis-server anywhere on it
    assert skewless("apply", cwd=repo, env=env).returncode == 0
    for command in (["serve", "--port", "0", "--metrics-port", "0"], ["materialize-incremental"]):
        error = one_line_error(skewless(*command, cwd=repo, env=env))
        assert "redis-server is not installed (not found on PATH)" in error, command
        assert "sudo apt-get install redis-server" in error
        assert "set $SKEWLESS_REDIS_SERVER to its path" in error
        assert "online_store.redis_url in skewless.yaml" in error


def test_the_grpc_port_is_already_in_use(repo: Path) -> None:
    assert skewless("apply", cwd=repo).returncode == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        error = one_line_error(skewless("serve", "--port", str(port), cwd=repo))
    assert f"port {port} on 127.0.0.1 is already in use" in error
    assert "--port P (0 picks a free one)" in error and "server.port in skewless.yaml" in error


def test_a_folder_without_skewless_yaml(tmp_path: Path) -> None:
    empty = tmp_path / "not_a_repo"
    empty.mkdir()
    for command in (["apply"], ["plan"], ["serve"], ["materialize-incremental"]):
        error = one_line_error(skewless(*command, cwd=empty))
        assert f"{empty} has no skewless.yaml, so it is not a feature repository" in error
        assert "skewless init" in error
    error = one_line_error(skewless("apply", str(empty / "missing"), cwd=tmp_path))
    assert f"{empty / 'missing'} has no skewless.yaml" in error
