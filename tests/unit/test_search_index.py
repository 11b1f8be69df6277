"""`SearchIndex` finds what a plain scan of the registry finds, in the same order."""

from __future__ import annotations

from skewless.registry.search import SearchIndex, search_features
from skewless.v1 import registry_pb2, types_pb2


def _registry() -> registry_pb2.Registry:
    reg = registry_pb2.Registry(project="p")
    # Views out of name order, and a view name that sorts between two others' features.
    for name, tags in [("zeta", {"team": "growth"}), ("alpha", {}), ("alpha_b", {"Tier": "Gold"})]:
        view = reg.feature_views.add(
            name=name, description=f"Stats of {name}", owner=f"{name}@example.com", tags=tags
        )
        for feature in ["b", "a", "c_rate"]:
            view.features.add(
                name=feature,
                value_type=types_pb2.VALUE_TYPE_INT64,
                description=f"the {feature} of {name}",
                tags={"unit": "count"} if feature == "a" else {},
            )
    return reg


def _scan(reg: registry_pb2.Registry, words: list[str]) -> list[str]:
    """The definition, without an index: every word in the feature's or its view's text."""
    found = []
    for view in reg.feature_views:
        for feature in view.features:
            text = " ".join(
                [view.name, view.description, view.owner, feature.name, feature.description]
                + [f"{k} {v}" for k, v in view.tags.items()]
                + [f"{k} {v}" for k, v in feature.tags.items()]
            ).lower()
            if all(w.lower() in text for w in words):
                found.append(f"{view.name}:{feature.name}")
    return sorted(found)


def test_the_index_finds_what_a_scan_finds_in_reference_order() -> None:
    reg = _registry()
    index = SearchIndex(reg, cache_size=2)
    queries = [
        ["a"],
        ["ALPHA"],
        ["gold"],
        ["tier", "b"],
        ["growth", "rate"],
        ["count"],
        ["example.com", "of"],
        ["a", "a"],
        ["nothing"],
    ]
    for words in queries * 2:  # the second round answers from the cache, or after eviction
        expected = _scan(reg, words)
        assert [h.reference for h in index.search(words)] == expected, words
        assert [h.reference for h in search_features(reg, words)] == expected, words
    assert len(index) == 9
    assert [h.reference for h in index.search(["alpha"])][:4] == [
        "alpha:a",
        "alpha:b",
        "alpha:c_rate",
        "alpha_b:a",
    ]


def test_cached_matches_are_per_words_not_per_case() -> None:
    index = SearchIndex(_registry())
    first = index.positions(["Gold"])
    assert index.positions(["gold"]) is first  # one cache entry for both spellings
    assert [index.hit(i).feature.name for i in first] == ["a", "b", "c_rate"]
