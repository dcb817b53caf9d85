"""``python -m benchmarks.reexec_put``: what a re-executed put saves, in pvxs alone and in the engine.

Each p4p put is a new channel-put (an INIT round trip for the PV's type, then the EXEC with the
value); a cycle is two of them and a heartbeat pulse one. pvxs can keep an operation and write
through it again (``autoExec(false)`` + ``reExecPut``), which p4p does not expose. This compiles
``reexec_put.cpp`` (g++, against the headers and libraries of the installed ``pvxslibs`` and
``epicscorelibs``) and times, on one soft IOC of its own, an acknowledged put of a number in four
ways, in alternating rounds: pvxs with a new operation each time, pvxs re-executing one kept
operation, and the engine's own ``BridgeIO.put``, through p4p's raw client and through its kept
operation (epics_bridge/kept/, which does what the second way does)::

    python -m benchmarks.reexec_put --puts 500 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import List

import epicscorelibs.path
import pvxslibs
import pvxslibs.path
from p4p.client.thread import Context

from epics_bridge.io import BridgeIO
from epics_bridge.ioc.softioc import Database, SoftIOC, db_dir
from epics_bridge.kept import KeptPuts

from .measure import BenchError

PV = "BENCH:REEXEC:TaskDuration"
SOURCE = Path(__file__).with_name("reexec_put.cpp")


def compile_program(folder: str) -> str:
    """The measuring program, built for the installed pvxs (its expert API on; the wheels' libraries
    use the old C++ string ABI)."""
    pvxs_lib = os.path.join(os.path.dirname(pvxslibs.__file__), "lib")
    program = os.path.join(folder, "reexec_put")
    command = ["g++", "-std=c++11", "-O2", "-D_GLIBCXX_USE_CXX11_ABI=0", "-DPVXS_ENABLE_EXPERT_API", str(SOURCE)]
    command += ["-I", pvxslibs.path.include_path, "-I", epicscorelibs.path.include_path]
    command += ["-L", pvxs_lib, "-L", epicscorelibs.path.lib_path, "-lpvxs", "-lCom"]
    command += [f"-Wl,-rpath,{pvxs_lib}", f"-Wl,-rpath,{epicscorelibs.path.lib_path}", "-o", program]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    except FileNotFoundError:
        raise BenchError("g++ is needed to build the measuring program") from None
    except subprocess.CalledProcessError as exc:
        raise BenchError(f"could not build {SOURCE.name}:\n{exc.stderr[-2000:]}") from None
    return program


def pvxs_round(program: str, puts: int) -> List[float]:
    """Medians (ms) of one round: a new operation per put, then one kept operation re-executed."""
    done = subprocess.run([program, PV, str(puts)], capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise BenchError(f"{SOURCE.name} failed: {done.stderr[-2000:]}")
    return [float(x) for x in done.stdout.split()]


def bridge_round(puts: int, kept: bool) -> float:
    """Median (ms) of the engine's own acknowledged puts: ``BridgeIO.put`` through p4p's raw client (a
    new operation each, the previous one closed while the next is under way), or through the kept
    operation of epics_bridge.kept, as the engine's own writes go."""
    context = Context("pva", nt=False)
    writes = KeptPuts(context) if kept else None
    if writes is not None:
        writes.keep(PV)
    io = BridgeIO(context, kept=writes)
    times = []
    try:
        io.get(PV)
        for i in range(puts):
            started = time.perf_counter()
            io.put({PV: i % 2})
            times.append(time.perf_counter() - started)
    finally:
        if writes is not None:
            writes.close()
        io.close()
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reexec_put", description=__doc__.split("\n\n")[0])
    parser.add_argument("--puts", type=int, default=500, help="timed puts per way and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, the three ways alternating")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="epics-bridge-reexec-") as folder:
        program = compile_program(folder)
        with SoftIOC([Database(db_dir() / "bridge.db", {"P": "BENCH:REEXEC:"})]) as ioc:
            os.environ.update(ioc.client_env)  # for p4p here and the program's pvxs client
            print(
                "| round | pvxs, a new operation per put | pvxs, one operation re-executed "
                "| BridgeIO.put through p4p | BridgeIO.put kept (the engine's) |"
            )
            print("|---|---|---|---|---|")
            for n in range(1, args.rounds + 1):
                fresh, kept = pvxs_round(program, args.puts)
                ours, ours_kept = bridge_round(args.puts, False), bridge_round(args.puts, True)
                print(f"| {n} | {fresh:.3f} ms | {kept:.3f} ms | {ours:.3f} ms | {ours_kept:.3f} ms |", flush=True)


if __name__ == "__main__":
    main()
