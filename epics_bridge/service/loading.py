"""Task files in, validated tasks out: what the launcher, the worker and every generator load.

Every file is imported and every task validated before anything starts; all problems come back
together in one ConfigError naming file, task and field. Importing a task file runs the user's
code, so it is a sandbox with clear exits: whatever the file does at import (``sys.exit()``, a
KeyboardInterrupt, any BaseException, a file that is unreadable or not a file) is one refusal
naming the file and what it did, never the launcher's own exit or a traceback.
"""

from __future__ import annotations

import errno
import os
import sys
import traceback
import types
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from ..registry import Registry
from ..task import ConfigError, Task

__all__ = ["load", "task_files"]

#: The package task files are imported under (``epics_bridge_tasks.<stem>_<n>``), so that a task
#: file never takes the name of a module it might shadow (``json.py``, ``select.py`` ...).
PACKAGE = "epics_bridge_tasks"


def task_files(paths: Sequence[str]) -> Tuple[List[Path], List[str]]:
    """The task files under ``paths`` (``*.py`` of a folder, not starting with ``_``) and the
    problems with the paths themselves."""
    files, errors = [], []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.glob("*.py") if not p.name.startswith("_"))
            if not found:
                errors.append(f"{path}: no task files (*.py not starting with '_') in this folder")
            files += found
        elif path.is_file() and path.suffix != ".py":
            errors.append(
                f"{path}: not a task file: give Python files (*.py) or folders of them"
                + (" (a database is loaded by its task's db= argument)" if path.suffix == ".db" else "")
            )
        elif path.is_file() or path.is_symlink():
            files.append(path)
        else:
            errors.append(f"{path}: no such file or folder")
    return files, errors


def _read(path: Path) -> str:
    if path.is_dir():
        raise ConfigError(f"{path}: a folder named like a task file: rename it (folders are not task files)")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{path}: cannot read: {reason}") from None


def _resolved(path: Path) -> Path:
    try:
        return path.resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop, before Python 3.13
        looped = isinstance(exc, RuntimeError) or getattr(exc, "errno", None) == errno.ELOOP
        raise ConfigError(f"{path}: cannot read: {'a symbolic link loop' if looped else exc}") from None


def _import(path: Path, index: int, sources: Dict[str, str]) -> None:
    """Run a task file as a module of its own name. Its text comes from ``sources`` when given there
    (the last good version a reload keeps running), else from disk, and is then recorded in
    ``sources``. Its folder goes at the end of ``sys.path``, so that a helper beside it
    (``_common.py``) imports, but never in place of a standard or installed module."""
    folder = str(_resolved(path).parent)
    if folder not in sys.path:
        sys.path.append(folder)
    filename = os.path.abspath(path)
    if filename not in sources:
        sources[filename] = _read(path)
    module = types.ModuleType(f"{PACKAGE}.{path.stem}_{index}")
    module.__file__ = filename
    sys.modules[module.__name__] = module
    exec(compile(sources[filename], filename, "exec"), module.__dict__)


def _describe(path: Path, exc: BaseException, debug: bool) -> str:
    """What a task file did wrong at import, in one line (with the traceback when ``debug``)."""
    if isinstance(exc, ConfigError):
        return str(exc)
    if isinstance(exc, SyntaxError):
        return f"{exc.filename}:{exc.lineno}: syntax error: {exc.msg}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == os.path.abspath(path)]
    where = f"{path}:{frames[-1].lineno}" if frames else str(path)
    if isinstance(exc, SystemExit):
        what = f"called sys.exit({exc.code!r}) while being imported: a task file must only define tasks"
    elif isinstance(exc, KeyboardInterrupt):
        what = "raised KeyboardInterrupt while being imported"
    elif not isinstance(exc, Exception):
        what = f"raised {type(exc).__name__} while being imported: {exc}"
    else:
        what = f"cannot import: {type(exc).__name__}: {exc}"
    detail = "\n" + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip() if debug else ""
    return f"{where}: {what}{detail}"


@contextmanager
def _importing(registry: Registry) -> Iterator[None]:
    """While task files run: ``bridge.run()`` at module level (a file without a ``__main__``
    guard) then does nothing, and the launcher runs the tasks once."""
    registry.loading = True
    try:
        yield
    finally:
        registry.loading = False


def load(
    paths: Sequence[str],
    registry: Registry,
    only: Sequence[str] = (),
    sources: Optional[Dict[str, str]] = None,
    debug: bool = False,
) -> List[Task]:
    """Import every task file under ``paths``; return the tasks they registered in ``registry`` (the
    default one, where ``from epics_bridge import bridge`` registers). One ConfigError lists every
    problem; ``debug`` adds the traceback of an import that failed.

    ``sources`` (absolute path -> text): files to import from that text rather than from disk; every
    file read from disk is added to it, so the caller holds exactly the code that validated."""
    known = {task.name for task in registry.tasks}
    files, errors = task_files(paths)
    sources = {} if sources is None else sources
    with _importing(registry):
        for index, path in enumerate(files):
            try:
                _import(path, index, sources)
            except BaseException as exc:  # noqa: B036 - the user's code may raise anything at import
                errors.append(_describe(path, exc, debug))
    loaded = Registry(t for t in registry.tasks if t.name not in known)
    if not errors and not loaded.tasks:
        errors.append(f"{', '.join(map(str, paths))}: no tasks found (decorate a function with @bridge.task)")
    if not errors and only:
        try:
            return loaded.select(only)
        except ConfigError as exc:
            errors.append(str(exc))
    if errors:
        raise ConfigError("\n".join(errors))
    return loaded.tasks
