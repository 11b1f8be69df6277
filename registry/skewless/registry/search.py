"""Finding registered features by words, for `SearchFeatures` and `skewless search` alike."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from skewless.v1 import registry_pb2

__all__ = ["FeatureHit", "search_features"]


@dataclass(frozen=True)
class FeatureHit:
    """One feature that matched.

    Attributes:
        view: The feature view holding the feature.
        feature: The feature's registry message.

    """

    view: registry_pb2.FeatureView
    feature: registry_pb2.Feature

    @property
    def reference(self) -> str:
        """The reference to request it by: `view:feature`."""
        return f"{self.view.name}:{self.feature.name}"


def _text(*parts: str | Mapping[str, str]) -> str:
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        else:  # a tags map: keys and values are both searchable
            out.extend(f"{k} {v}" for k, v in part.items())
    return " ".join(out).lower()


def search_features(registry: registry_pb2.Registry, words: Iterable[str]) -> list[FeatureHit]:
    """Returns the features in which every word appears, sorted by reference.

    A word matches (case-insensitively, as a substring) the feature's name, description
    or tags, or its view's name, description, owner or tags. View tags and feature tags
    are searched side by side, so a key both use is found through either.

    Args:
        registry: The registry to search.
        words: The words; each must match.

    """
    wanted = [w.lower() for w in words]
    hits: list[FeatureHit] = []
    for view in registry.feature_views:
        view_text = _text(view.name, view.description, view.owner, view.tags)
        for feature in view.features:
            text = view_text + " " + _text(feature.name, feature.description, feature.tags)
            if all(word in text for word in wanted):
                hits.append(FeatureHit(view=view, feature=feature))
    hits.sort(key=lambda h: h.reference)
    return hits
