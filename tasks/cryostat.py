"""A cryostat check as an ``async def`` task: PVs read while an async function waits for another.

Each trigger reads the four stage temperatures and the limit (one batch) and, at the same time,
awaits ``settled(t, "flow")``, which reads the helium flow every 50 ms until three readings agree.
``asyncio.gather`` runs both: the cycle takes as long as the slower one, not their sum. The same
holds for any async client (an HTTP or database call) awaited beside the PVs. ``time_limit=2.0``
ends a cycle whose flow never settles (EXCEPTION, naming the line it waited on) and the next trigger
is served as usual. docs/async.md says when to choose ``async def`` and when not. Trigger it with
``python -c "from p4p.client.thread import Context as C; C('pva').put('CRYO:01:Trigger', 1)"``.
"""

import asyncio

from epics_bridge import TaskStatus, bridge

STAGES = ["stage1", "stage2", "stage3", "stage4"]


async def settled(t, name, readings=3, interval=0.05, tolerance=0.01):
    """The value of ``name`` once ``readings`` reads, ``interval`` s apart, agree within ``tolerance``.

    It sleeps with ``await asyncio.sleep``: a ``time.sleep`` would stop the task's other reads too.
    """
    seen = [await t.get(name)]
    while len(seen) < readings or max(seen[-readings:]) - min(seen[-readings:]) > tolerance:
        await asyncio.sleep(interval)
        seen.append(await t.get(name))
    return seen[-1]


@bridge.task(
    prefix="CRYO:01:",
    pvs={
        "stage1": "Stage1:Temp",
        "stage2": "Stage2:Temp",
        "stage3": "Stage3:Temp",
        "stage4": "Stage4:Temp",
        "limit": "Limit:SP",
        "flow": "Flow:RBV",
        "warmest": "Warmest",
        "flow_settled": "Flow:Settled",
    },
    time_limit=2.0,
    db="../db/cryostat.db",  # loaded with P=CRYO:01:, the task's prefix
)
async def cryostat(t):
    values, flow = await asyncio.gather(t.get([*STAGES, "limit"]), settled(t, "flow"))
    warmest = max(values[stage] for stage in STAGES)
    await t.put(warmest=warmest, flow_settled=flow)
    if warmest > values["limit"]:
        t.log.warning("a stage is at {:.2f} K, above the {:.2f} K limit", warmest, values["limit"])
        return TaskStatus.LOGIC_FAILURE
    return TaskStatus.SUCCESS


if __name__ == "__main__":
    bridge.run()
