"""The README's main job, end to end: the example repository applied, materialized on the
embedded Redis, served, and queried by `examples/quickstart.py` (the README's Python code)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.integration.served import serve

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "rides"


def run(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_readme_main_job_and_python_quickstart(tmp_path: Path) -> None:
    repo = tmp_path / "rides"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns("data", ".skewless"))
    cli = ["-m", "skewless.cli"]
    run("generate_data.py", cwd=repo)
    assert "registry version 1" in run(*cli, "apply", ".", cwd=repo)
    out = run(*cli, "materialize-incremental", "--repo", ".", "--no-progress", cwd=repo)
    assert "materialized 2 feature view(s)" in out

    # The materialization ran on the embedded Redis, which persisted its data: the
    # server starts that Redis again and serves the values written before.
    with serve(repo) as served:
        printed = run(
            str(ROOT / "examples" / "quickstart.py"),
            "--target", served.target,
            "--orders", str(repo / "data" / "orders.parquet"),
            cwd=repo,
        )  # fmt: skip
    result = json.loads(printed)
    assert "driver_stats:avg_daily_trips" in result["search"]
    statuses = result["online"]["statuses"]
    for feature in ("conv_rate", "current_balance", "is_premium"):
        known, unknown = statuses[feature]
        assert known in ("PRESENT", "OUTSIDE_MAX_AGE"), (feature, known)
        assert unknown == "NOT_FOUND"
    assert result["online"]["values"]["driver_id"] == [1001, 9999]
    assert result["training"]["rows"] == 500
    assert result["training"]["columns"][:5] == [
        "order_id", "driver_id", "customer_id", "event_timestamp", "trip_completed",
    ]  # fmt: skip
    assert result["training"]["columns"][5:] == [
        "conv_rate", "acc_rate", "avg_daily_trips", "current_balance", "is_premium",
    ]  # fmt: skip
    assert result["error"]["code"] == "NOT_FOUND"
    assert "no_such" in result["error"]["message"]


def test_readme_quotes_the_examples_it_names() -> None:
    """Every README block introduced by `<!-- file: PATH -->` is that file, verbatim."""
    readme = (ROOT / "README.md").read_text()
    marker = "<!-- file: "
    quoted = 0
    for chunk in readme.split(marker)[1:]:
        path, rest = chunk.split(" -->", 1)
        body = rest.split("```", 2)[1].split("\n", 1)[1]
        assert body == (ROOT / path).read_text(), f"README copy of {path} is stale"
        quoted += 1
    assert quoted >= 1
