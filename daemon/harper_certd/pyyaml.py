"""PyYAML for the whole package, imported without compiling the patterns it compiles at
import: ``from harper_certd.pyyaml import yaml``, never ``import yaml`` in the package.

A leaf module (the standard library and PyYAML).  PyYAML compiles its regular expressions
when its modules are imported.  One of them, ``yaml.reader.Reader.NON_PRINTABLE``, is a class
of every printable code point up to U+10FFFF, for which ``re``'s compiler builds a map of the
Basic Multilingual Plane one code point at a time: that one ``re.compile`` cost 7-15 ms of
PyYAML's 20-25 ms import on the bench machine (2026-12-07; ``status --no-probe`` took 0.96x
its time before, 40 alternated runs).  Our files are read by libyaml (``yamlfile``:
``CSafeLoader``), which checks printable characters itself and never uses that pattern;
PyYAML's own ``SafeLoader`` (``yamlfile._worded``, to word an error) still does.  The two
timestamp patterns (0.9 ms) serve only a scalar that looks like a date.  So every pattern
compiled while PyYAML is imported is a ``_Deferred``: compiled, the same pattern with the
same flags, the first time one of its attributes is used (the resolver's ``match``, the
reader's ``search``); a pattern no file needs is never compiled.
"""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, Any

_REAL_COMPILE = re.compile  # what _Deferred compiles with, whenever it is first used


class _Deferred:
    """A ``re.Pattern`` compiled on first use: ``search``, ``match`` ... are the compiled
    pattern's own (``__getattr__``), so what uses it sees no difference."""

    __slots__ = ("_compiled", "_flags", "_pattern")

    def __init__(self, pattern: str, flags: int) -> None:
        self._pattern = pattern
        self._flags = flags
        self._compiled: re.Pattern[str] | None = None

    def __getattr__(self, name: str) -> Any:
        compiled = self._compiled
        if compiled is None:
            compiled = self._compiled = _REAL_COMPILE(self._pattern, self._flags)
        return getattr(compiled, name)


def _import_pyyaml() -> Any:
    """``yaml``, its patterns deferred when this is the first import of it.

    ``re.compile`` is wrapped for the import alone (once: Python's import lock holds this
    module's import); only PyYAML's own modules' patterns are deferred (the caller's module),
    another thread's are compiled as they would be."""
    if "yaml" in sys.modules:  # imported already (a test, a tool): as it is
        return sys.modules["yaml"]

    def compile_(pattern: Any, flags: int = 0) -> Any:
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if caller == "yaml" or caller.startswith("yaml."):
            return _Deferred(pattern, flags)
        return _REAL_COMPILE(pattern, flags)

    re.compile = compile_
    try:
        import yaml as module  # start-up cost: the reason for this module
    finally:
        re.compile = _REAL_COMPILE
    return module


__all__ = ["yaml"]

if TYPE_CHECKING:
    import yaml
else:
    yaml = _import_pyyaml()
