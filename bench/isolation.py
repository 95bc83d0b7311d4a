"""What isolation="process" costs: state operations, a one-task run and a mapped task,
in process vs isolated, side by side in one run.

Prints one JSON line. Per-operation latency of set/get from a sync task and aset/aget
from an async task, each measured in process and in a task process (ms per op: each
side's median of ``--rounds`` rounds, the two sides alternating); the
median wall time of running a trivial task (ms: forking the task process from its
template, running it and reaping it, against a thread hop), the isolated overhead (the
difference of the medians), and the first run, which starts the template
(``first_run_ms``); the wall time of a task mapped over ``$STATEWARD_BENCH_FANOUT``
instances (default 1000, at most ``max_active_tasks`` = 16 at once) that each set and
get one key (s). Because wall times move with the machine's load, each of these also
has figures the load hardly moves: the CPU time the work took, summed over the
runtime, its template and its task processes (``*_cpu_*``), and the minor page faults
of one task process (``task_process_minor_faults``: the pages it copied from its
template or touched first, the bulk of its kernel time). Memory: the peak of the
runtime and everything it started during the mapped task (MB, the sum of their
proportional set sizes: shared pages divided among the processes sharing them), the
template's peak resident size, the largest peak resident size of a task process seen
during the mapped task, and the most task processes seen at once; one task process's
resident and private memory; the load average before and after; and the ratios
isolated / in process. Usage::

    python bench/isolation.py [--n 1000] [--rounds 7] [--runs 20] [--store sqlite|memory]
        [--no-fork-server]

The task processes load this file by path, as they load any Dag file."""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import time
from typing import Any

import trio

from _common import emit, machine, tmp_db
from stateward import Dag, MemoryStore, open_runtime
from stateward._runtime import forkserver

dag = Dag("bench_isolation", params={"n": 2000})
#: Instances of the mapped task (read when the file is loaded: the template reads the
#: runtime's environment).
FANOUT = int(os.environ.get("STATEWARD_BENCH_FANOUT", "1000"))
fanout = Dag("bench_isolation_fanout", max_active_tasks=16)


@dag.task
def sync_ops(task_state: Any, params: Any) -> dict[str, float]:
    n = params["n"]
    start = time.perf_counter()
    for i in range(n):
        task_state.set(f"k{i % 10}", i)
    set_ms = (time.perf_counter() - start) / n * 1000
    start = time.perf_counter()
    for i in range(n):
        task_state.get(f"k{i % 10}")
    return {"set_ms": set_ms, "get_ms": (time.perf_counter() - start) / n * 1000}


@dag.task
async def async_ops(task_state: Any, params: Any) -> dict[str, float]:
    n = params["n"]
    start = time.perf_counter()
    for i in range(n):
        await task_state.aset(f"k{i % 10}", i)
    aset_ms = (time.perf_counter() - start) / n * 1000
    start = time.perf_counter()
    for i in range(n):
        await task_state.aget(f"k{i % 10}")
    return {"aset_ms": aset_ms, "aget_ms": (time.perf_counter() - start) / n * 1000}


@dag.task
def noop() -> None:
    return None


@dag.task
def memory() -> dict[str, float]:
    """This process's resident and private memory, and its template's (its parent's)
    resident memory (MB)."""
    with open("/proc/self/smaps_rollup") as rollup:
        fields = {line.split(":")[0]: line.split()[1] for line in rollup if ":" in line}
    private = int(fields["Private_Clean"]) + int(fields["Private_Dirty"])
    return {
        "rss_mb": int(fields["Rss"]) / 1024,
        "private_mb": private / 1024,
        "template_rss_mb": _rss_kb(os.getppid()) / 1024,
    }


@fanout.task
def one_set_one_get(x: int, task_state: Any) -> int:
    task_state.set("x", x)
    return int(task_state.get("x"))


one_set_one_get.expand(x=list(range(FANOUT)))


def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    """A memory figure of ``/proc/PID/status`` (kB): VmRSS now, or VmHWM, its peak."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int, *, threads: bool = True) -> list[int]:
    """The children of ``pid``; of its main thread only unless ``threads``. (Reading
    the ``children`` file of another thread of a process that later exits makes its
    reaping walk the cached entries: the sampler must not do it to task processes.)"""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task") if threads else [str(pid)]
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as listing:
                found.extend(int(c) for c in listing.read().split())
        except OSError:
            continue
    return found


class Sample:
    """The memory of the runtime and what it started, sampled during the mapped task."""

    def __init__(self) -> None:
        self.peak_pss_kb = 0
        self.template_hwm_kb = 0
        self.task_process_hwm_kb = 0
        self.most_task_processes = 0

    def take(self) -> None:
        total = _pss_kb(os.getpid())
        for template in _children(os.getpid()):  # the templates (single-threaded)
            total += _pss_kb(template)
            self.template_hwm_kb = max(self.template_hwm_kb, _rss_kb(template, "VmHWM"))
            attempts = _children(template, threads=False)
            self.most_task_processes = max(self.most_task_processes, len(attempts))
            for attempt in attempts:
                total += _pss_kb(attempt)
                hwm = _rss_kb(attempt, "VmHWM")
                self.task_process_hwm_kb = max(self.task_process_hwm_kb, hwm)
        self.peak_pss_kb = max(self.peak_pss_kb, total)


def _template_faults() -> int:
    """The minor page faults of the task processes the templates have reaped so far."""
    total = 0
    for child in _children(os.getpid()):
        try:
            with open(f"/proc/{child}/stat") as stat:
                total += int(stat.read().rpartition(")")[2].split()[8])  # cminflt
        except OSError:
            continue
    return total


def _tree_cpu_s() -> float:
    """CPU seconds used so far by this process and the children it reaped, and by each
    running child (a template) with the children it reaped (its task processes): the
    work done, whatever else the machine's CPUs were busy with."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime
    for child in _children(os.getpid()):
        try:
            with open(f"/proc/{child}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue
        # utime, stime, cutime, cstime, in clock ticks
        total += sum(int(field) for field in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


async def ops_rounds(n: int, rounds: int, store: str) -> dict[str, dict[str, float]]:
    """Per-operation latency in process and isolated, in ``rounds`` alternating rounds
    of ``n`` operations of each kind (two runtimes open side by side): each side's
    median per operation. A single loop of each moved by 20-30% between runs on a quiet
    machine; alternating rounds meet the same load on both sides."""
    seen: dict[str, dict[str, list[float]]] = {"none": {}, "process": {}}
    async with contextlib.AsyncExitStack() as stack:
        runtimes = {}
        for isolation in seen:
            where = (
                {"store": MemoryStore()}
                if store == "memory"
                else {"db": tmp_db(f"ops-{isolation}.db")}
            )
            runtimes[isolation] = await stack.enter_async_context(
                open_runtime(**where, isolation=isolation)
            )
        for i in range(rounds):
            for isolation, rt in runtimes.items():
                for task in (sync_ops, async_ops):
                    ti = await rt.run_task(task, run_id=f"ops-{i}", params={"n": n})
                    if ti.error is not None:
                        raise ti.error
                    for name, value in ti.result.items():
                        seen[isolation].setdefault(name, []).append(value)
    return {
        isolation: {name: statistics.median(values) for name, values in figures.items()}
        for isolation, figures in seen.items()
    }


async def measure(isolation: str, n: int, runs: int, store: str) -> dict[str, float]:
    """Every figure for one isolation mode but the per-operation ones (:func:`ops_rounds`),
    in a runtime of its own."""
    where = {"store": MemoryStore()} if store == "memory" else {"db": tmp_db(f"{isolation}.db")}
    figures: dict[str, float] = {}
    async with open_runtime(**where, isolation=isolation) as rt:
        start = time.perf_counter()
        await rt.run_task(noop, run_id="first")
        figures["first_run_ms"] = (time.perf_counter() - start) * 1000
        await rt.run_task(noop, run_id="warm-up")
        times = []
        cpu, faults = _tree_cpu_s(), _template_faults()
        for i in range(runs):
            start = time.perf_counter()
            ti = await rt.run_task(noop, run_id=f"run-{i}")
            times.append((time.perf_counter() - start) * 1000)
            if ti.error is not None:
                raise ti.error
        figures["one_task_run_cpu_ms"] = (_tree_cpu_s() - cpu) / runs * 1000
        figures["one_task_run_ms"] = statistics.median(times)
        if isolation == "process":
            figures["task_process_minor_faults"] = (_template_faults() - faults) / runs
            ti = await rt.run_task(memory, run_id="memory")
            figures.update({f"task_process_{k}": v for k, v in ti.result.items()})
        memory_sample = Sample()

        async def sample() -> None:
            while True:
                memory_sample.take()
                await trio.sleep(0.05)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample)
            start, cpu = time.perf_counter(), _tree_cpu_s()
            result = await rt.run_dag(fanout, run_id="fanout")
            figures["fanout_s"] = time.perf_counter() - start
            figures["fanout_cpu_s"] = _tree_cpu_s() - cpu
            nursery.cancel_scope.cancel()
        failed = [ti for ti in result.task_instances if ti.state != "success"]
        if failed:
            raise RuntimeError(f"{len(failed)} mapped instances failed: {failed[0].error!r}")
        figures["fanout_peak_pss_mb"] = memory_sample.peak_pss_kb / 1024
        figures["template_peak_rss_mb"] = memory_sample.template_hwm_kb / 1024
        figures["task_process_peak_rss_mb"] = memory_sample.task_process_hwm_kb / 1024
        figures["most_task_processes"] = memory_sample.most_task_processes
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="operations of each kind per round")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds of operations")
    parser.add_argument("--runs", type=int, default=20, help="one-task runs to time")
    parser.add_argument("--store", choices=["sqlite", "memory"], default="sqlite")
    parser.add_argument(
        "--no-fork-server", action="store_true", help="start an interpreter per attempt"
    )
    args = parser.parse_args()
    forkserver.ENABLED = not args.no_fork_server
    load = os.getloadavg()[0]
    ops = trio.run(ops_rounds, args.n, args.rounds, args.store)
    inline = {**trio.run(measure, "none", args.n, args.runs, args.store), **ops["none"]}
    isolated = {**trio.run(measure, "process", args.n, args.runs, args.store), **ops["process"]}
    names = (
        "set_ms", "get_ms", "aset_ms", "aget_ms", "one_task_run_ms", "one_task_run_cpu_ms",
        "fanout_s", "fanout_cpu_s",
    )  # fmt: skip
    memory = ("rss_mb", "private_mb", "template_rss_mb")
    emit(
        "isolation",
        n=args.n,
        rounds=args.rounds,
        runs=args.runs,
        fanout=FANOUT,
        store=args.store,
        fork_server=forkserver.fork_server_available(),
        **{f"in_process_{k}": round(inline[k], 4) for k in names},
        **{f"isolated_{k}": round(isolated[k], 4) for k in names},
        **{f"ratio_{k.removesuffix('_ms')}": round(isolated[k] / inline[k], 2) for k in names},
        in_process_first_run_ms=round(inline["first_run_ms"], 2),
        isolated_first_run_ms=round(isolated["first_run_ms"], 1),
        isolated_one_task_overhead_ms=round(
            isolated["one_task_run_ms"] - inline["one_task_run_ms"], 2
        ),
        task_process_minor_faults=round(isolated["task_process_minor_faults"]),
        in_process_fanout_peak_pss_mb=round(inline["fanout_peak_pss_mb"], 1),
        isolated_fanout_peak_pss_mb=round(isolated["fanout_peak_pss_mb"], 1),
        runtime_peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        template_peak_rss_mb=round(isolated["template_peak_rss_mb"], 1),
        task_process_peak_rss_mb=round(isolated["task_process_peak_rss_mb"], 1),
        max_active_tasks=fanout.max_active_tasks,
        most_task_processes=isolated["most_task_processes"],
        **{f"task_process_{k}": round(isolated[f"task_process_{k}"], 1) for k in memory},
        load_average_at_start=round(load, 2),
        load_average_at_end=round(os.getloadavg()[0], 2),
        **machine(),
    )


if __name__ == "__main__":
    main()
