"""Finding registered features by words, for `SearchFeatures` and `skewless search` alike."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from skewless.v1 import registry_pb2

__all__ = ["FeatureHit", "SearchIndex", "search_features"]


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


class SearchIndex:
    """The searchable text of every feature of one registry, built once per version.

    Building it lowers and joins each feature's text once and sorts the features by
    reference; a search is then one substring test per feature and word, with no
    protobuf read or copy. The last searches' matches are kept (`cache_size` of them),
    so the next page of a search does not scan again. Safe to share between threads.
    """

    def __init__(self, registry: registry_pb2.Registry, *, cache_size: int = 64) -> None:
        """Indexes `registry` (which must not change afterwards)."""
        entries: list[tuple[str, str, FeatureHit]] = []
        for view in registry.feature_views:
            view_text = _text(view.name, view.description, view.owner, view.tags)
            for feature in view.features:
                hit = FeatureHit(view=view, feature=feature)
                text = view_text + " " + _text(feature.name, feature.description, feature.tags)
                entries.append((hit.reference, text, hit))
        entries.sort(key=lambda e: e[0])  # stable: ties keep the registry's order
        self.registry = registry
        self._texts = [text for _, text, _ in entries]
        self._hits = [hit for _, _, hit in entries]
        self._cache: OrderedDict[tuple[str, ...], list[int]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """How many features are indexed."""
        return len(self._hits)

    def hit(self, position: int) -> FeatureHit:
        """The feature at `position` (from `positions`) of the reference order."""
        return self._hits[position]

    def positions(self, words: Iterable[str]) -> list[int]:
        """The positions, in reference order, of the features in which every word appears.

        Do not modify the list returned: it is shared with later calls.
        """
        wanted = tuple(w.lower() for w in words)
        with self._lock:
            cached = self._cache.get(wanted)
            if cached is not None:
                self._cache.move_to_end(wanted)
                return cached
        texts = self._texts
        found = list(range(len(texts)))
        for word in dict.fromkeys(wanted):  # each distinct word once, narrowing
            found = [i for i in found if word in texts[i]]
        with self._lock:
            self._cache[wanted] = found
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return found

    def search(self, words: Iterable[str]) -> list[FeatureHit]:
        """The features in which every word appears, sorted by reference."""
        return [self._hits[i] for i in self.positions(words)]


def search_features(registry: registry_pb2.Registry, words: Iterable[str]) -> list[FeatureHit]:
    """Returns the features in which every word appears, sorted by reference.

    A word matches (case-insensitively, as a substring) the feature's name, description
    or tags, or its view's name, description, owner or tags. View tags and feature tags
    are searched side by side, so a key both use is found through either. A server
    searching one registry many times keeps a `SearchIndex` of it instead.

    Args:
        registry: The registry to search.
        words: The words; each must match.

    """
    return SearchIndex(registry, cache_size=0).search(words)
