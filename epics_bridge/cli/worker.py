"""The entry point of a worker process: ``python -m epics_bridge.cli.worker PID LIFELINE``.

A front end of its own because it hands the worker the default registry, into which the task
files it imports register (see :mod:`epics_bridge.service.worker`)."""

import sys

from ..app import bridge
from ..service.interface import exit_process
from ..service.worker import main

if __name__ == "__main__":
    exit_process(main(bridge, sys.argv[1:]))
