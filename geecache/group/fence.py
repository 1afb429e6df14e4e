"""The write fence: whether a load's key was written while the load ran."""

from __future__ import annotations

class WriteFence:
    """Tells a load whether its key was written while it ran (its value is then stale).

    Only keys with a load in flight are tracked, so it stays as small as the
    number of concurrent loads; the event loop's single thread guards it.
    """

    def __init__(self) -> None:
        self._keys: dict[str, list[int]] = {}  # key -> [loads in flight, writes seen]

    def enter(self, key: str) -> int:
        """A load of *key* starts; returns the write count to hand back to ``leave``."""
        entry = self._keys.setdefault(key, [0, 0])
        entry[0] += 1
        return entry[1]

    def leave(self, key: str, writes: int) -> bool:
        """A load of *key* ended; True when *key* was written since ``enter``."""
        entry = self._keys[key]
        entry[0] -= 1
        if not entry[0]:
            del self._keys[key]
        return entry[1] != writes

    def wrote(self, key: str) -> None:
        """*key* was written or invalidated."""
        entry = self._keys.get(key)
        if entry is not None:
            entry[1] += 1

    def wrote_all(self) -> None:
        """Every key may have been written (the host missed invalidations)."""
        for entry in self._keys.values():
            entry[1] += 1
