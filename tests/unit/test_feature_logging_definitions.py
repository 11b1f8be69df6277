"""The `logging` block of a feature service: Python API, YAML, and the checks at apply."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from skewless.core.errors import DefinitionError
from skewless.registry import (
    Entity,
    Feature,
    FeatureLogging,
    FeatureService,
    FeatureView,
    PushSource,
    RepoDefinitions,
)
from skewless.registry.repo_loader import load_definitions
from skewless.registry.validation import validate_definitions

YAML = """
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
sources:
  - {name: driver_push, type: push, timestamp_field: ts}
feature_views:
  - name: driver_live
    entities: [driver]
    source: driver_push
    features: [{name: conv_rate, type: FLOAT64}]
feature_services:
  - name: live
    features: [driver_live]
    logging: {sample_rate: 0.1, report_schedule: 1h}
"""


def twin(logging: FeatureLogging | None, key: str = "driver_id") -> RepoDefinitions:
    driver = Entity(name="driver", join_keys=(key,), value_type="INT64")
    source = PushSource(name="driver_push", timestamp_field="ts")
    view = FeatureView(
        name="driver_live",
        entities=(driver,),
        source=source,
        features=(Feature("conv_rate", "FLOAT64"),),
    )
    return RepoDefinitions(
        entities=(driver,),
        sources=(source,),
        feature_views=(view,),
        feature_services=(FeatureService("live", ("driver_live",), logging=logging),),
    )


def test_yaml_and_python_give_the_same_logging_block(tmp_path: Path) -> None:
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "all.yaml").write_text(YAML)
    loaded = load_definitions(tmp_path)
    assert loaded.problems == ()
    expected = twin(FeatureLogging(sample_rate=0.1, report_schedule="1h"))
    assert loaded.definitions.to_registry("p") == expected.to_registry("p")
    service = expected.to_registry("p").feature_services[0]
    assert service.logging.sample_rate == 0.1
    assert service.logging.report_schedule.ToTimedelta() == timedelta(hours=1)
    assert validate_definitions(expected) == []


def test_no_logging_block_leaves_the_field_unset() -> None:
    service = twin(None).to_registry("p").feature_services[0]
    assert not service.HasField("logging")


@pytest.mark.parametrize(
    ("logging", "message"),
    [
        (FeatureLogging(sample_rate=1.5), "logging.sample_rate must be a number from 0 to 1"),
        (FeatureLogging(sample_rate=-0.1), "logging.sample_rate must be a number from 0 to 1"),
        (FeatureLogging(sample_rate=0.5, report_schedule="10s"), "at least 1m"),
        (FeatureLogging(sample_rate=0.5, report_schedule="soon"), "bad duration 'soon'"),
    ],
)
def test_bad_logging_values_are_refused(logging: FeatureLogging, message: str) -> None:
    problems = [str(p) for p in validate_definitions(twin(logging))]
    assert len(problems) == 1 and message in problems[0], problems
    with pytest.raises(DefinitionError, match="logging"):
        twin(logging).to_registry("p")


def test_a_join_key_named_like_a_log_column_is_refused_when_logging() -> None:
    problems = [str(p) for p in validate_definitions(twin(FeatureLogging(0.5), "request_id"))]
    assert any("join key 'request_id' is a column of the feature log" in p for p in problems)
    assert validate_definitions(twin(FeatureLogging(0.0), "request_id")) == []


def test_yaml_logging_shape_problems(tmp_path: Path) -> None:
    (tmp_path / "features").mkdir()
    bad = YAML.replace(
        "logging: {sample_rate: 0.1, report_schedule: 1h}", "logging: {sample_rate: lots, x: 1}"
    )
    (tmp_path / "features" / "all.yaml").write_text(bad)
    problems = [str(p) for p in load_definitions(tmp_path).problems]
    assert any("unknown field(s) 'x'" in p for p in problems), problems
    assert any("'sample_rate' must be a number" in p for p in problems), problems
