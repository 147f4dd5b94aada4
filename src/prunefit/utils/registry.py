"""A name -> entry registry with teaching errors, shared by the metric and removal-method registries."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from prunefit.errors import ConfigError

E = TypeVar("E")


class Registry(Generic[E]):
    """``register(name, entry)``; ``get(name)`` names the available entries when ``name`` is unknown.
    ``load_builtin`` imports the modules that register the built-in entries (on first use)."""

    def __init__(self, what: str, load_builtin: Callable[[], None]) -> None:
        self.what = what
        self._load_builtin = load_builtin
        self._entries: dict[str, E] = {}
        self._loaded = False

    def register(self, name: str, entry: E) -> None:
        """Add ``entry`` under ``name`` (an error if the name is taken)."""
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._entries[name] = entry

    def unregister(self, name: str) -> None:
        """Remove ``name`` (an error lists the available names if it is unknown)."""
        self.get(name)  # unknown names raise the teaching error
        del self._entries[name]

    def _ensure(self) -> None:
        if not self._loaded:
            self._loaded = True
            self._load_builtin()

    def get(self, name: str) -> E:
        """The entry ``name``, after the entries are loaded (an error lists the available names)."""
        self._ensure()
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(f"unknown {self.what} {name!r}; available: {sorted(self._entries)}") from None

    def all(self) -> list[E]:
        """Every entry, sorted by name, after the entries are loaded."""
        self._ensure()
        return [self._entries[k] for k in sorted(self._entries)]
