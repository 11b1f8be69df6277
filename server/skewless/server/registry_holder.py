"""The registry a running server serves, reloaded when `skewless apply` writes a new one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from skewless.core.errors import SkewlessError
from skewless.registry.registry_store import RegistryStore, registry_not_applied
from skewless.v1 import registry_pb2

__all__ = ["RegistryHolder"]

_log = logging.getLogger(__name__)

Listener = Callable[[registry_pb2.Registry], None]


class RegistryHolder:
    """Holds the current registry and tells listeners when a new version is loaded.

    Listeners (for example the online servicer compiling its lookup plan) run
    synchronously on each load, before the new version becomes visible to `current`,
    so a request never sees a registry whose plan is not compiled.
    """

    def __init__(self, store: RegistryStore) -> None:
        """Creates a holder over a registry file; call `reload` to read it."""
        self.store = store
        self._registry: registry_pb2.Registry | None = None
        self._stat: tuple[object, int] | None = None
        self._error: SkewlessError | None = None
        self._listeners: list[Listener] = []

    @property
    def current(self) -> registry_pb2.Registry:
        """The registry being served.

        Raises:
            FailedPreconditionError: Nothing was applied yet, or the object store
                holding the data dir refuses access.
            StoreUnavailableError: No registry is loaded yet and the object store
                holding the data dir did not answer.

        """
        if self._registry is None:
            raise self._error or registry_not_applied()
        return self._registry

    @property
    def loaded(self) -> bool:
        """Whether a registry has been loaded."""
        return self._registry is not None

    def subscribe(self, listener: Listener) -> None:
        """Calls `listener` with every registry loaded from now on (and the current one)."""
        self._listeners.append(listener)
        if self._registry is not None:
            listener(self._registry)

    def _fetch(self) -> tuple[bool, tuple[object, int] | None, registry_pb2.Registry | None]:
        """(changed, marker, registry): reads the store if its change marker moved."""
        try:
            stat = self.store.stat_key()
            if stat == self._stat:
                self._error = None
                return False, stat, None
            registry = self.store.load()
        except SkewlessError as exc:
            self._error = exc  # what `current` answers until a registry is loaded
            raise
        self._error = None
        return True, stat, registry

    def _install(
        self, stat: tuple[object, int] | None, registry: registry_pb2.Registry | None
    ) -> bool:
        self._stat = stat
        if registry is None or (
            self._registry is not None and registry.digest == self._registry.digest
        ):
            return False
        for listener in self._listeners:
            listener(registry)
        self._registry = registry
        _log.info("serving registry version %d (%s)", registry.version, registry.digest[:12])
        return True

    def reload(self) -> bool:
        """Loads the registry if it changed since the last load.

        Returns:
            True when a new version was loaded.

        """
        changed, stat, registry = self._fetch()
        return changed and self._install(stat, registry)

    async def watch(self, interval: float = 1.0) -> None:
        """Polls the registry forever, reloading on change; cancel to stop.

        The poll runs in a worker thread (on object storage it is a listing request). A
        store outage is logged once when it starts and once when it ends, not per poll.
        """
        failing = ""
        while True:
            await asyncio.sleep(interval)
            try:
                changed, stat, registry = await asyncio.to_thread(self._fetch)
            except SkewlessError as exc:  # a store outage must not stop serving
                if exc.message != failing:
                    _log.warning(
                        "registry reload failed (%s); still serving the previous version",
                        exc.message,
                    )
                failing = exc.message
                continue
            except Exception:  # a bad file must not stop serving the good version
                _log.exception("registry reload failed; still serving the previous version")
                continue
            if failing:
                _log.info("the registry can be read again")
                failing = ""
            if changed:
                try:
                    self._install(stat, registry)
                except Exception:
                    _log.exception("registry reload failed; still serving the previous version")
