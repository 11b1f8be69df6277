"""`skewless init`: each template makes a repository that apply, materialize-incremental
and serve take without edits, serving fresh values; an existing repository is never
overwritten; `examples/rides` is exactly the rides template."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from skewless.cli.init import TEMPLATES, template_files
from skewless.client import Client
from tests.integration.served import serve

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "skewless.cli"]
#: One lookup per template: the feature service and an entity row known to have data.
LOOKUPS = {
    "rides": ("driver_ranking", {"driver_id": [1001], "customer_id": [2001]}),
    "minimal": ("user_model", {"user_id": [1, 99]}),
}


def skewless(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=180, check=False
    )


@pytest.mark.parametrize("template", TEMPLATES)
def test_init_makes_a_repository_that_applies_materializes_and_serves(
    tmp_path: Path, template: str
) -> None:
    done = skewless("init", "repo", "--template", template, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "created feature repository 'repo'" in done.stdout
    assert "skewless apply" in done.stdout
    repo = tmp_path / "repo"
    assert (repo / "skewless.yaml").read_text().count("project: repo") == 1
    assert any((repo / "data").glob("*.parquet"))

    for step in (["apply"], ["materialize-incremental", "--no-progress"]):
        done = skewless(*step, cwd=repo)  # the defaults: the current folder, up to now
        assert done.returncode == 0, done.stdout + done.stderr
    service, entities = LOOKUPS[template]
    with serve(repo) as served, Client(served.target) as client:
        online = client.get_online_features(entities, feature_service=service)
        statuses = online.statuses()
    features = [name for name in statuses if name not in entities]
    assert features
    for name in features:
        assert statuses[name][0] == "PRESENT", (name, statuses[name])
    if template == "minimal":
        assert {statuses[name][1] for name in features} == {"NOT_FOUND"}


def test_init_never_overwrites_a_repository(tmp_path: Path) -> None:
    assert skewless("init", "repo", "--template", "minimal", cwd=tmp_path).returncode == 0
    config = (tmp_path / "repo" / "skewless.yaml").read_bytes()
    again = skewless("init", "repo", cwd=tmp_path)
    assert again.returncode == 2
    assert "already holds a feature repository (skewless.yaml)" in again.stderr
    assert "nothing was written" in again.stderr
    assert (tmp_path / "repo" / "skewless.yaml").read_bytes() == config
    assert not (tmp_path / "repo" / "features" / "drivers.yaml").exists()

    # A folder with one of the template's files (but no skewless.yaml) is refused too.
    other = tmp_path / "other"
    (other / "features").mkdir(parents=True)
    (other / "features" / "features.yaml").write_text("# mine\n")
    refused = skewless("init", str(other), "--template", "minimal", cwd=tmp_path)
    assert refused.returncode == 2
    assert "already has features/features.yaml" in refused.stderr
    assert (other / "features" / "features.yaml").read_text() == "# mine\n"
    assert not (other / "skewless.yaml").exists()


def test_init_names_the_project_after_the_folder_or_the_flag(tmp_path: Path) -> None:
    done = skewless("init", "My Features-2", "--template", "minimal", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "project: my_features_2" in (tmp_path / "My Features-2" / "skewless.yaml").read_text()
    bad = skewless("init", "x", "--project", "Not-A-Name", cwd=tmp_path)
    assert bad.returncode == 2 and "is not a project name" in bad.stderr
    assert not (tmp_path / "x").exists()


def test_examples_rides_is_the_rides_template() -> None:
    example = ROOT / "examples" / "rides"
    for relative, source in template_files("rides").items():
        assert (example / relative).read_bytes() == source.read_bytes(), relative
    # The example's files are links into the template (one copy of each in the tree), so
    # the walk follows links; any file of its own would show up here.
    written = {
        (Path(folder) / name).relative_to(example).as_posix()
        for folder, _, names in os.walk(example, followlinks=True)
        for name in names
        if not {"data", ".skewless", "__pycache__"} & set(Path(folder).relative_to(example).parts)
    }
    assert written == set(template_files("rides"))
