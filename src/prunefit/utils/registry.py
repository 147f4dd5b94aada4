"""A name -> entry registry with teaching errors, shared by the metric, removal-method and attack registries."""

from __future__ import annotations

import sys
from importlib.metadata import entry_points
from typing import Callable, Generic, Optional, TypeVar

from prunefit.errors import ConfigError

E = TypeVar("E")


class Registry(Generic[E]):
    """``register(name, entry)``; ``get(name)`` names the available entries when ``name`` is unknown.

    On first use ``load_builtin`` imports the modules that register the built-in entries, then every entry point
    of ``group`` (an installed plug-in's ``[project.entry-points."prunefit.methods"]`` etc.) is loaded: an object of
    ``entry_type`` is registered under its ``name``; anything else callable is called with no arguments (it
    registers what it brings itself). A plug-in that fails to load or register is skipped with a one-line warning
    on stderr naming it; the built-ins and the other plug-ins still load."""

    def __init__(self, what: str, load_builtin: Callable[[], None], group: Optional[str] = None,
                 entry_type: Optional[type] = None) -> None:
        self.what = what
        self._load_builtin = load_builtin
        self.group = group
        self._entry_type = entry_type
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
            self._load_plugins()

    def _load_plugins(self) -> None:
        """Register every entry point of ``group`` (built-ins first, so a plug-in cannot shadow one silently)."""
        if self.group is None:
            return
        for ep in entry_points(group=self.group):
            try:
                obj = ep.load()
                if self._entry_type is not None and isinstance(obj, self._entry_type):
                    self.register(obj.name, obj)
                elif callable(obj):
                    obj()
                else:
                    raise TypeError(f"{ep.value} is neither an entry object nor a callable")
            except Exception as exc:  # a broken plug-in must not take the CLI down with it
                msg = str(exc).splitlines()[0][:200] if str(exc) else ""
                print(f"prunefit: warning: skipped {self.what} plug-in {ep.name!r} ({ep.value}, entry point group "
                      f"{self.group}): {type(exc).__name__}: {msg}", file=sys.stderr)

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
