"""Reduce a waveform to statistics with numpy on each trigger.

Shows that a waveform read is a numpy array, and that an empty waveform is not an error but a
SKIPPED cycle. Fill it with e.g.
``C('pva').put('DIAG:BPM:01:Wave', numpy.random.normal(size=1000))``.
"""

import numpy as np

from epics_bridge import TaskStatus, bridge


@bridge.task(
    prefix="DIAG:BPM:01:",
    pvs={"wave": "Wave", "mean": "Mean", "std": "Std", "min": "Min", "max": "Max", "count": "Count"},
    db=("../db/waveform.db", {"P": "DIAG:BPM:01:"}),
)
def waveform_stats(t):
    wave = np.asarray(t.get("wave"), dtype=float)
    if wave.size == 0:
        return TaskStatus.SKIPPED
    t.put(mean=wave.mean(), std=wave.std(), min=wave.min(), max=wave.max(), count=wave.size)
    return TaskStatus.SUCCESS


if __name__ == "__main__":
    bridge.run()
