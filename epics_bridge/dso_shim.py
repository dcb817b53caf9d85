"""Import p4p without importing setuptools.

p4p loads EPICS base through ``epicscorelibs.path``, which needs only ``setuptools_dso.runtime``
(a small module that finds the shared libraries). Importing that submodule first runs the package's
``__init__``, which imports all of setuptools (for building DSOs, never needed at run time): about
16 MB of private memory and 0.1 s in every process, a third of an idle worker.

:func:`install` puts a stand-in for the ``setuptools_dso`` package in ``sys.modules`` before p4p is
imported: it has the real package's ``__path__``, so its submodules import as usual, and the
first use of anything else (``setuptools_dso.setup``, ``DSO`` ...) runs the real ``__init__`` in
it, so code that does use setuptools_dso still sees the whole package. (``pvxslibs.path`` imports
the run-time functions from the package itself: the stand-in serves those from the submodule.)
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

__all__ = ["install"]

NAME = "setuptools_dso"


#: What the package re-exports from ``setuptools_dso.runtime`` (``pvxslibs.path`` imports them from
#: the package itself): served from that submodule without running ``__init__``.
RUNTIME_NAMES = ("dylink_prepare_dso", "find_dso")


class _Deferred(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name in RUNTIME_NAMES:
            return getattr(importlib.import_module(NAME + ".runtime"), name)
        spec = self.__spec__
        self.__class__ = types.ModuleType  # type: ignore[assignment]  # from now on an ordinary module
        spec.loader.exec_module(self)  # type: ignore[union-attr]
        return getattr(self, name)


def install() -> None:
    """Defer ``setuptools_dso``'s package ``__init__`` until something other than a submodule is used."""
    if NAME in sys.modules:
        return
    try:
        spec = importlib.util.find_spec(NAME)
    except (ImportError, ValueError):
        return
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return
    module = _Deferred(NAME)
    module.__spec__ = spec
    module.__path__ = list(spec.submodule_search_locations)
    module.__file__ = spec.origin
    module.__package__ = NAME
    module.__loader__ = spec.loader
    sys.modules[NAME] = module
