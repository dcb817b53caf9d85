"""The exit statuses of a process that runs tasks, apart from the engine so that the supervisor,
which only starts and watches workers, never loads p4p (and its numpy) for three numbers."""

__all__ = ["EXIT_OK", "EXIT_CONFIG", "EXIT_STUCK"]

EXIT_OK = 0
#: Bad configuration: nothing was started.
EXIT_CONFIG = 2
#: The watchdog ended the process because a task stayed stuck.
EXIT_STUCK = 3
