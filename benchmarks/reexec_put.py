"""``python -m benchmarks.reexec_put``: what a put would cost if p4p could re-execute one.

Each p4p put is a new channel-put (an INIT round trip for the PV's type, then the EXEC with the
value); a cycle is two of them and a heartbeat pulse one. pvxs can keep an operation and write
through it again (``autoExec(false)`` + ``reExecPut``), which p4p does not expose. This compiles
``reexec_put.cpp`` (g++, against the headers and libraries of the installed ``pvxslibs`` and
``epicscorelibs``) and times, on one soft IOC of its own, an acknowledged put of a number in three
ways, in alternating rounds: pvxs with a new operation each time, pvxs re-executing one kept
operation, and p4p's raw client as ``BridgeIO`` uses it::

    python -m benchmarks.reexec_put --puts 500 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import epicscorelibs.path
import pvxslibs
import pvxslibs.path

from epics_bridge.ioc.softioc import Database, SoftIOC, db_dir

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


def pvxs_round(program: str, puts: int, env: Dict[str, str]) -> List[float]:
    """Medians (ms) of one round: a new operation per put, then one kept operation re-executed."""
    done = subprocess.run([program, PV, str(puts)], env=env, capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise BenchError(f"{SOURCE.name} failed: {done.stderr[-2000:]}")
    return [float(x) for x in done.stdout.split()]


def p4p_round(puts: int) -> float:
    """Median (ms) of acknowledged p4p raw puts, each its own operation, closed after."""
    from p4p.client import raw
    from p4p.client.thread import Context

    ctx = Context("pva", nt=False)
    request = Context.makeRequest("field()record[block=true]")
    times = []
    try:
        ctx.get(PV)
        for i in range(puts):
            answered = threading.Lock()
            answered.acquire()

            def build(value: Any, i: int = i) -> None:
                value["value"] = i % 2

            started = time.perf_counter()
            op = raw.Context.put(ctx, PV, lambda _, a=answered: a.release(), builder=build, request=request, get=False)
            if not answered.acquire(timeout=5):
                raise BenchError(f"no answer from {PV}")
            times.append(time.perf_counter() - started)
            op.close()
    finally:
        ctx.close()
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reexec_put", description=__doc__.split("\n\n")[0])
    parser.add_argument("--puts", type=int, default=500, help="timed puts per way and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, the three ways alternating")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="epics-bridge-reexec-") as folder:
        program = compile_program(folder)
        with SoftIOC([Database(db_dir() / "bridge.db", {"P": "BENCH:REEXEC:"})]) as ioc:
            os.environ.update(ioc.client_env)
            env = {**os.environ, **ioc.client_env}
            print("| round | pvxs, a new operation per put | pvxs, one operation re-executed | p4p raw put |")
            print("|---|---|---|---|")
            for n in range(1, args.rounds + 1):
                fresh, kept = pvxs_round(program, args.puts, env)
                ours = p4p_round(args.puts)
                print(f"| {n} | {fresh:.3f} ms | {kept:.3f} ms | {ours:.3f} ms |", flush=True)


if __name__ == "__main__":
    main()
