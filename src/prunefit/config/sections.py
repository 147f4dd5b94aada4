"""Config schemas whose sections come from a registry: one dataclass field per registered entry's config class.

A command whose config holds one section per registered method (``erase``: ``esd.*``, ``uce.*``, ...) or metric
(``evaluate``: ``fid.*``, ``cost.*``, ...) declares only its own fields and a ``registry_schema`` classmethod that
returns ``with_sections(cls, [(section name, config class), ...])`` from its registry. ``load_config`` builds that
schema, so a method or metric registered anywhere (a plugin, a test module) gets its ``name.key=value`` overrides
without any edit to the command's config.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

_CACHE: dict[tuple, type] = {}


def with_sections(base: type, sections: Sequence[tuple[str, type]]) -> type:
    """A dataclass subclass of ``base`` with one defaulted field per ``(name, config class)``; the same class for
    the same sections (cached). A section named like one of ``base``'s own fields is refused."""
    base = getattr(base, "_sections_base", base)
    own = {f.name for f in dataclasses.fields(base)}
    clash = sorted(n for n, _ in sections if n in own)
    if clash:
        raise ValueError(f"registered section(s) {clash} clash with {base.__name__}'s own fields; rename the entry")
    key = (base, tuple(sections))
    if key not in _CACHE:
        fields = [(n, cls, dataclasses.field(default_factory=cls)) for n, cls in sections]
        _CACHE[key] = dataclasses.make_dataclass(
            base.__name__, fields, bases=(base,),
            namespace={"_sections_base": base, "__module__": base.__module__, "__doc__": base.__doc__})
    return _CACHE[key]


def concrete_schema(schema: type) -> type:
    """The class ``load_config`` builds for ``schema``: its ``registry_schema()`` where it has one."""
    hook = getattr(schema, "registry_schema", None)
    return hook() if callable(hook) else schema


def build(schema: type, **kwargs):
    """An instance of ``schema``'s concrete class from keyword arguments (its registered sections included), for
    code that builds a typed config instead of parsing one."""
    return concrete_schema(schema)(**kwargs)
