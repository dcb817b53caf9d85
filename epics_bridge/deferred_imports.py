"""Stand-ins for two modules that our dependencies import and a daemon never uses.

Every worker process pays for what its imports load, once per process, and a service of 1000
tasks runs about a dozen processes. Two imports cost more than they give:

* ``setuptools_dso``: p4p loads EPICS base through ``epicscorelibs.path``, which needs only
  ``setuptools_dso.runtime`` (a small module that finds the shared libraries). Importing that
  submodule first runs the package's ``__init__``, which imports all of setuptools (for building
  DSOs, never needed at run time): about 16 MB of private memory and 0.1 s in every process.
  ``pvxslibs.path`` imports the run-time functions from the package itself: the stand-in serves
  those from the submodule.
* ``loguru._asyncio_loop``: loguru imports asyncio (and with it ssl and OpenSSL) at import, only
  to find the running event loop when a coroutine is added as a sink: about 3 MB in every
  process. The stand-in imports asyncio when that first happens.

Each stand-in runs the real module in place on the first use of any other name, so code that does
use ``setuptools_dso.setup`` (or whatever a later loguru adds) still sees the whole module.
``epics_bridge/__init__`` calls :func:`install` before anything else imports loguru or p4p.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Any, Optional

__all__ = ["install"]

SETUPTOOLS_DSO = "setuptools_dso"
#: What the package re-exports from ``setuptools_dso.runtime``: served without running ``__init__``.
RUNTIME_NAMES = ("dylink_prepare_dso", "find_dso")
LOGURU_LOOP = "loguru._asyncio_loop"


class _Deferred(types.ModuleType):
    """Becomes the real module, run in place, on the first use of a name the stand-in lacks."""

    def __getattr__(self, name: str) -> Any:
        if name == "__path__":  # the import system asking whether a module is a package: it is not
            raise AttributeError(name)
        spec = self.__spec__
        self.__class__ = types.ModuleType  # type: ignore[assignment]  # from now on an ordinary module
        spec.loader.exec_module(self)  # type: ignore[union-attr]
        return getattr(self, name)


class _DeferredDso(_Deferred):
    def __getattr__(self, name: str) -> Any:
        if name in RUNTIME_NAMES:
            return getattr(importlib.import_module(SETUPTOOLS_DSO + ".runtime"), name)
        return super().__getattr__(name)


def _get_running_loop() -> Any:
    import asyncio

    return asyncio.get_running_loop()


def _get_task_loop(task: Any) -> Any:
    return task.get_loop()


def _stand_in(cls: type, spec: Optional[ModuleSpec]) -> Optional[_Deferred]:
    if spec is None or spec.loader is None:
        return None
    module = cls(spec.name)
    module.__spec__, module.__file__, module.__loader__ = spec, spec.origin, spec.loader
    module.__package__ = spec.name if spec.submodule_search_locations else spec.parent
    if spec.submodule_search_locations:
        module.__path__ = list(spec.submodule_search_locations)
    sys.modules[spec.name] = module
    return module  # type: ignore[no-any-return]


def _find(name: str) -> Optional[ModuleSpec]:
    """The spec of a top-level package, found without importing it (None if absent or imported)."""
    if name in sys.modules:
        return None
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def install() -> None:
    """Put the stand-ins in ``sys.modules``; a module already imported is left as it is."""
    dso = _find(SETUPTOOLS_DSO)
    if dso is not None and dso.submodule_search_locations:
        _stand_in(_DeferredDso, dso)
    loguru = _find("loguru")
    if loguru is not None and loguru.submodule_search_locations:
        path = Path(list(loguru.submodule_search_locations)[0]) / "_asyncio_loop.py"
        if path.is_file():
            loop = _stand_in(_Deferred, importlib.util.spec_from_file_location(LOGURU_LOOP, path))
            if loop is not None:
                loop.get_running_loop = _get_running_loop  # type: ignore[attr-defined]
                loop.get_task_loop = _get_task_loop  # type: ignore[attr-defined]
