"""The default of every task setting, defined once.

``@bridge.task``, :class:`~epics_bridge.registry.Task`, the class API's
:class:`~epics_bridge.daemon.BridgeDaemon` and :class:`~epics_bridge.io.BridgeIO` all read them
from here, so the documented defaults cannot drift apart between the two APIs.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULTS", "Defaults"]


@dataclass(frozen=True)
class Defaults:
    #: Seconds between two Heartbeat pulses.
    heartbeat_period: float = 1.0
    #: Seconds a loop may stay busy before it counts as stalled.
    stall_timeout: float = 10.0
    #: Stuck heartbeat periods in a row before the process exits for its supervisor to restart it.
    max_stuck_cycles: int = 15
    #: Seconds each PV read or write may take.
    timeout: float = 5.0
    #: Seconds between two calls of a class-API daemon's overridden ``trigger()``.
    poll_period: float = 1.0


DEFAULTS = Defaults()
