"""``bridge``: the default registry, and ``bridge.run()``, which runs what a script registered.

The registry itself only validates and collects tasks; running them needs the service and the
command line, which sit above everything else. This facade joins the two for the script that ends
in ``bridge.run()``, and imports the service only when it runs, so that ``import epics_bridge`` in
a task file (or in pytest, which loads the bridge_ioc plugin everywhere) stays light.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from .registry import Registry

__all__ = ["Bridge", "bridge"]


class Bridge(Registry):
    """A registry that can also run its tasks as a service of this process."""

    def run(self, argv: Optional[Sequence[str]] = None, **options: Any) -> int:
        """Run every registered task until SIGTERM/SIGINT; returns the exit status.

        The launcher's options come from ``argv`` (default: this script's command line, so
        ``python tasks/motor.py --ioc --no-log-files`` works); ``options`` are their defaults by the
        launcher's names (``log_dir``, ``log_level``, ``metrics_port``, ``isolation`` ...). The tasks
        run in this process unless ``--isolation file|task`` asks for worker processes. A
        configuration it refuses ends the process as the launcher does: the problems on stderr,
        exit status 2, nothing started. Called while the launcher imports this file, it does nothing.
        """
        if self.loading:
            from loguru import logger

            logger.debug("bridge.run() while the launcher imports the task files: ignored, the launcher runs them")
            return 0
        from .cli.run import run_script

        return run_script(self, argv, **options)


#: The default registry: ``from epics_bridge import bridge``.
bridge = Bridge()
