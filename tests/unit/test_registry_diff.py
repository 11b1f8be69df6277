"""`plan_changes`: what an apply changes, field by field, and which changes are breaking."""

from __future__ import annotations

import dataclasses

from skewless.registry import Entity, Feature, FeatureService, FeatureView, PushSource
from skewless.registry.definitions import RepoDefinitions
from skewless.registry.registry_diff import (
    Action,
    ObjectChange,
    RegistryPlan,
    format_duration,
    plan_changes,
)
from skewless.v1 import registry_pb2

DRIVER = Entity(name="driver", join_keys=("driver_id",), value_type="INT64")
SOURCE = PushSource(name="driver_push", timestamp_field="ts")
FEATURES = (Feature("conv_rate", "FLOAT64"), Feature("trips", "INT64"))
VIEW = FeatureView(
    name="driver_stats", entities=(DRIVER,), source=SOURCE, features=FEATURES, ttl="2d"
)
SERVICE = FeatureService(name="ranking", features=("driver_stats",))


def registry(view: FeatureView = VIEW, *services: FeatureService) -> registry_pb2.Registry:
    return RepoDefinitions(
        feature_views=(view,), feature_services=services or (SERVICE,)
    ).to_registry("tests")


def stored(version: int = 3, **generations: int) -> registry_pb2.Registry:
    reg = registry()
    reg.version = version
    for view in reg.feature_views:
        view.generation = generations.get(view.name, 0)
    return reg


def plan(new: registry_pb2.Registry, *, data: bool, current: registry_pb2.Registry | None = None,
         ) -> RegistryPlan:  # fmt: skip
    return plan_changes(
        current if current is not None else stored(), new, has_values=lambda v, g: data and g == 0
    )


def view_change(result: RegistryPlan) -> ObjectChange:
    (change,) = [c for c in result.changes if c.kind == "feature view"]
    return change


def test_an_unchanged_repository_has_no_changes_and_keeps_the_generation() -> None:
    result = plan(registry(), data=True, current=stored(driver_stats=2))
    assert result.changes == () and result.rematerialize == ()
    assert result.registry.feature_views[0].generation == 2
    assert result.current_version == 3


def test_first_apply_adds_everything() -> None:
    result = plan_changes(None, registry(), has_values=lambda v, g: False)
    assert result.current_version == 0
    assert [(c.kind, c.name, c.action) for c in result.changes] == [
        ("entity", "driver", Action.ADDED),
        ("data source", "driver_push", Action.ADDED),
        ("feature view", "driver_stats", Action.ADDED),
        ("feature service", "ranking", Action.ADDED),
    ]
    assert not result.breaking


def test_a_type_change_with_values_is_breaking_and_starts_a_new_generation() -> None:
    retyped = dataclasses.replace(VIEW, features=(Feature("conv_rate", "STRING"), FEATURES[1]))
    result = plan(registry(retyped), data=True)
    change = view_change(result)
    assert change.action == Action.CHANGED
    assert [(f.field, f.before, f.after) for f in change.fields] == [
        ("features.conv_rate.value_type", "FLOAT64", "STRING")
    ]
    assert len(change.breaking) == 1 and "'conv_rate' changes type" in change.breaking[0]
    assert result.rematerialize == ("driver_stats",)
    assert result.registry.feature_views[0].generation == 1


def test_a_type_change_without_values_is_not_breaking_but_still_moves_the_generation() -> None:
    retyped = dataclasses.replace(VIEW, features=(Feature("conv_rate", "STRING"), FEATURES[1]))
    result = plan(registry(retyped), data=False)
    assert not result.breaking
    assert result.registry.feature_views[0].generation == 1  # never read old bytes anyway


def test_join_key_changes_are_breaking_with_values() -> None:
    rekeyed = dataclasses.replace(
        VIEW, entities=(Entity(name="driver", join_keys=("driver_id",), value_type="STRING"),)
    )
    result = plan(registry(rekeyed), data=True)
    change = view_change(result)
    assert any("join keys change" in r for r in change.breaking)
    entity = next(c for c in result.changes if c.kind == "entity")
    assert [(f.field, f.before, f.after) for f in entity.fields] == [
        ("join_keys.driver_id.value_type", "INT64", "STRING")
    ]
    assert result.rematerialize == ("driver_stats",)


def test_removing_a_feature_a_service_serves_is_breaking_even_without_values() -> None:
    fewer = dataclasses.replace(VIEW, features=FEATURES[:1])
    change = view_change(plan(registry(fewer), data=False))
    assert change.breaking == (
        "feature 'trips' is removed but feature service(s) ranking serve it: their callers "
        "get other columns",
    )
    # No service serves it: not breaking.
    only = FeatureService(name="ranking", features=("driver_stats:conv_rate",))
    current = registry(VIEW, only)
    current.version = 1
    result = plan_changes(current, registry(fewer, only), has_values=lambda v, g: True)
    assert not result.breaking


def test_shortening_the_ttl_is_breaking_lengthening_is_not() -> None:
    shorter = view_change(plan(registry(dataclasses.replace(VIEW, ttl="1d")), data=False))
    assert shorter.breaking and "shortens from 2d to 1d" in shorter.breaking[0]
    longer = view_change(plan(registry(dataclasses.replace(VIEW, ttl="7d")), data=True))
    assert not longer.breaking
    assert [(f.field, f.before, f.after) for f in longer.fields] == [("ttl", "2d", "7d")]
    forever = view_change(plan(registry(dataclasses.replace(VIEW, ttl=0)), data=True))
    assert not forever.breaking


def test_descriptions_tags_and_additions_are_listed_field_by_field() -> None:
    edited = dataclasses.replace(
        VIEW,
        description="How good a driver is.",
        tags={"tier": "gold"},
        features=(*FEATURES, Feature("rating", "FLOAT32")),
    )
    change = view_change(plan(registry(edited), data=True))
    assert not change.breaking
    assert {f.field: (f.before, f.after) for f in change.fields} == {
        "description": ("", "How good a driver is."),
        "tags.tier": ("", "gold"),
        "features": ("conv_rate, trips", "conv_rate, trips, rating"),
        "features.rating.value_type": ("", "FLOAT32"),
    }
    assert change.notes and "it gains rating" in change.notes[0]


def test_a_removed_and_re_added_view_never_reads_its_old_values() -> None:
    result = plan_changes(None, registry(), has_values=lambda v, g: g < 2)
    assert result.registry.feature_views[0].generation == 2
    (view,) = [c for c in result.changes if c.kind == "feature view"]
    assert view.notes and "new generation" in view.notes[0]


def test_removed_objects_are_listed() -> None:
    other = FeatureService(name="other", features=("driver_stats:trips",))
    current = registry(VIEW, SERVICE, other)
    current.version = 4
    result = plan_changes(current, registry(), has_values=lambda v, g: False)
    assert [(c.kind, c.name, c.action) for c in result.changes] == [
        ("feature service", "other", Action.REMOVED)
    ]


def test_format_duration() -> None:
    from datetime import timedelta

    assert format_duration(timedelta(0)) == "0"
    assert format_duration(timedelta(days=2)) == "2d"
    assert format_duration(timedelta(hours=1, minutes=30)) == "1h30m"
    assert format_duration(timedelta(seconds=90)) == "1m30s"
