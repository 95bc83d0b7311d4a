"""The docs' measured figures, written from ``bench/results.jsonl`` and nothing else.

``docs/performance.md`` is written whole. Other pages quote figures in regions
between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``, which are rewritten in
place; the text around them is the page author's. ``tests/test_docs_bench.py`` checks
that the pages in the repository are what this module makes of the results file, so a
figure typed by hand, or a results file committed without its pages, fails the tests.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.jsonl"
Results = dict[str, dict[str, Any]]
STORES = {"sqlite": "SQLite (`synchronous=FULL`)", "memory": "in-memory"}

AIRFLOW = """\
## Airflow 3.3.2 on the same kind of machine (2 cores), for reference

Measured running a task through `airflow dags test` (Task SDK, in-process execution
API, SQLite metadata DB):

| operation | Airflow 3.3.2 |
|---|---|
| `task_state_store.set` | 7.1–7.7 ms |
| `task_state_store.get` | 6.4–7.2 ms |
| asset-state set | 6.5–7.6 ms |
| asset-state get | 4.8–6.0 ms |
| one-task Dag, whole process | 7.3–7.7 s, 222 MB peak RSS |

Raw `sqlite3` on the same machine (WAL, `synchronous=FULL`, commit per write): one
upsert 0.22–0.28 ms, 100 per transaction 0.007 ms each, a read 0.006 ms; a trio
memory-channel round trip 0.015 ms; `trio.from_thread.run` 0.16 ms.
"""

POSTGRES_NOTE = """
The "PostgreSQL" rows run `state_ops.py`, `concurrent_writers.py` and `history.py`
with `--db postgresql://...` against the server
on the same machine (loopback, PostgreSQL's default `synchronous_commit = on`), each
in a schema of its own dropped afterwards; the baseline is raw asyncpg from plain
asyncio doing the same upsert or read, one statement per round trip. "The
trio-asyncio floor" is that raw upsert sent from trio through trio-asyncio, which any
trio program hosting asyncpg pays. The history row sets alternating rounds with
`history=10` against `history=0` (issue 16's bound); its CPU adds the runtime's
process and the server processes serving it (from `/proc`), which the machine's load
moves less than the time, most of which waits for the server's WAL sync. See
docs/scaling.md.
"""


def load_results(path: Path = RESULTS) -> Results:
    """The results file's lines by name (``state_ops``, ``state_ops_postgres``, ...)."""
    results: Results = {}
    for line in path.read_text().splitlines():
        result = json.loads(line)
        suffix = "_postgres" if result.get("store") == "postgres" else ""
        results[result["bench"] + suffix] = result
    return results


def rows(results: Results) -> list[tuple[str, str, str, str, str]]:
    """(figure, stateward, baseline in the same run, ratio, target) for the table."""
    ops = results["state_ops"]
    writers = results["concurrent_writers"]
    mapped = results["mapped"]
    cli = results["cli_run"]
    render = results["template_render"]
    harness = results["harness"]
    iso = results["isolation"]
    return [
        ("sync `set`, durable (per op)", f"{ops['sync_set_ms']:.3f} ms",
         f"raw commit-per-write {ops['raw_commit_per_write_ms']:.3f} ms",
         f"{ops['ratio_sync_set_vs_raw_commit']}×", "≤ 1.5×"),
        ("sync `set` vs the thread floor", f"{ops['sync_set_ms']:.3f} ms",
         f"raw commit-per-write via a thread {ops['raw_commit_via_thread_ms']:.3f} ms",
         f"{ops['ratio_sync_set_vs_thread_floor']}×", ""),
        ("sync `get` (per op)", f"{ops['sync_get_ms']:.3f} ms",
         f"raw read {ops['raw_read_ms']:.4f} ms", f"{ops['ratio_sync_get_vs_raw_read']}×",
         "≤ 0.25 ms"),
        ("async `aset`, durable (per op)", f"{ops['async_aset_ms']:.3f} ms",
         f"raw commit-per-write {ops['raw_commit_per_write_ms']:.3f} ms",
         f"{ops['ratio_async_aset_vs_raw_commit']}×", ""),
        ("async `aget` (per op)", f"{ops['async_aget_ms']:.4f} ms",
         f"raw read {ops['raw_read_ms']:.4f} ms", f"{ops['ratio_async_aget_vs_raw_read']}×",
         "≤ 0.03 ms"),
        ("64 concurrent durable writers", f"{writers['stateward_writes_per_s']:,} writes/s "
         f"({writers['writes_per_transaction']} per transaction)",
         f"raw commit-per-write {writers['raw_commit_per_write_per_s']:,}/s",
         f"{writers['ratio_vs_raw']}×", "≥ 5×"),
        (f"{mapped['instances']:,} mapped instances (set + get each)",
         f"{mapped['run_seconds']} s run, {mapped['process_seconds']} s process, "
         f"{mapped['peak_rss_mb']} MB peak RSS",
         f"raw set+get pairs {mapped['raw_set_get_pairs_seconds']} s",
         f"{mapped['ratio_run_vs_raw']}×", "≤ 10 s, ≤ 250 MB"),
        ("one-task Dag through `stateward run`",
         f"{cli['stateward_run_seconds']} s, {cli['stateward_peak_rss_mb']} MB peak RSS",
         f"bare python + sqlite3 {cli['raw_python_sqlite_seconds']} s",
         f"{cli['ratio_vs_raw']}×", "≤ 0.5 s, ≤ 60 MB"),
        ("template field reading 3 keys (per attempt)",
         f"{render['render_cost_per_attempt_ms']:.3f} ms",
         f"jinja2 compile + render {render['jinja_compile_and_render_ms']:.3f} ms",
         f"{render['ratio_render_vs_jinja']}×", ""),
        ("one harness test (MemoryStore)", f"{harness['median_ms']} ms median, "
         f"{harness['p95_ms']} ms p95", f"trio.run + dict {harness['baseline_median_ms']} ms",
         f"{harness['ratio_median']}×", "< 20 ms"),
        ("isolated sync `set` / `get` (per op)",
         f"{iso['isolated_set_ms']:.3f} / {iso['isolated_get_ms']:.3f} ms",
         f"in process {iso['in_process_set_ms']:.3f} / {iso['in_process_get_ms']:.3f} ms",
         f"{iso['ratio_set']}× / {iso['ratio_get']}×", ""),
        ("isolated `aset` / `aget` (per op)",
         f"{iso['isolated_aset_ms']:.3f} / {iso['isolated_aget_ms']:.3f} ms",
         f"in process {iso['in_process_aset_ms']:.3f} / {iso['in_process_aget_ms']:.4f} ms",
         f"{iso['ratio_aset']}× / {iso['ratio_aget']}×", "`aget` ≤ 3×"),
        ("isolated one-task run, overhead (median)",
         f"{iso['isolated_one_task_overhead_ms']:.1f} ms "
         f"({iso['isolated_one_task_run_cpu_ms']:.1f} ms CPU)",
         f"in process {iso['in_process_one_task_run_ms']:.2f} ms",
         f"{iso['ratio_one_task_run']}×", "≤ 15 ms"),
        (f"{iso['fanout']:,} isolated mapped instances (set + get each)",
         f"{iso['isolated_fanout_s']:.1f} s ({iso['isolated_fanout_cpu_s']:.1f} s CPU), "
         f"{iso['isolated_fanout_peak_pss_mb']:.0f} MB peak (PSS, all processes)",
         f"in process {iso['in_process_fanout_s']:.2f} s", f"{iso['ratio_fanout_s']}×",
         "≤ 20 s"),
        *postgres_rows(results),
    ]  # fmt: skip


def postgres_rows(results: Results) -> list[tuple[str, str, str, str, str]]:
    """The PostgreSQL store's rows, next to raw asyncpg measured in the same run."""
    ops = results.get("state_ops_postgres")
    writers = results.get("concurrent_writers_postgres")
    if ops is None or writers is None:
        return []
    raw_commit = f"raw asyncpg commit-per-write {ops['raw_commit_per_write_ms']:.3f} ms"
    spread = results.get("runtimes_postgres")
    shared: list[tuple[str, str, str, str, str]] = []
    if spread is not None:
        shared = [
            (f"PostgreSQL: {spread['instances']:,} mapped instances of "
             f"{spread['sleep_ms']:.0f} ms, 2 / 3 runtime processes on one run id",
             f"{spread['runtimes_2_seconds']} / {spread['runtimes_3_seconds']} s",
             f"1 runtime {spread['runtimes_1_seconds']} s "
             f"(no overhead: {spread['ideal_1_seconds']} s)",
             f"{spread['speedup_2']}× / {spread['speedup_3']}× faster", ""),
        ]  # fmt: skip
    history = results.get("history_postgres")
    if history is not None and "history_cpu_ratio" in history:
        cpu = {side: (history[f"history_{side}_set_cpu_us"]
                      + history[f"history_{side}_set_server_us"]) / 1000
               for side in ("on", "off")}  # fmt: skip
        shared += [
            ("PostgreSQL: durable `aset` with `history=10` (per op)",
             f"{history['history_on_set_ms']:.3f} ms ({cpu['on']:.3f} ms CPU, runtime + server)",
             f"`history=0` {history['history_off_set_ms']:.3f} ms ({cpu['off']:.3f} ms CPU)",
             f"{history['history_write_ratio']:.2f}× ({history['history_cpu_ratio']:.2f}× CPU)",
             "≤ 1.15×"),
        ]  # fmt: skip
    raw_read = f"raw asyncpg read {ops['raw_read_ms']:.4f} ms"
    return [
        ("PostgreSQL: sync `set`, durable (per op)", f"{ops['sync_set_ms']:.3f} ms", raw_commit,
         f"{ops['ratio_sync_set_vs_raw_commit']}×", ""),
        ("PostgreSQL: sync `get` (per op)", f"{ops['sync_get_ms']:.3f} ms", raw_read,
         f"{ops['ratio_sync_get_vs_raw_read']}×", ""),
        ("PostgreSQL: async `aset`, durable (per op)", f"{ops['async_aset_ms']:.3f} ms",
         raw_commit, f"{ops['ratio_async_aset_vs_raw_commit']}×", ""),
        ("PostgreSQL: async `aset` vs the trio-asyncio floor", f"{ops['async_aset_ms']:.3f} ms",
         f"raw upsert via trio-asyncio {ops['raw_commit_via_trio_asyncio_ms']:.3f} ms",
         f"{ops['ratio_async_aset_vs_trio_asyncio_floor']}×", ""),
        ("PostgreSQL: async `aget` (per op)", f"{ops['async_aget_ms']:.4f} ms", raw_read,
         f"{ops['ratio_async_aget_vs_raw_read']}×", ""),
        ("PostgreSQL: 64 concurrent durable writers",
         f"{writers['stateward_writes_per_s']:,} writes/s "
         f"({writers['writes_per_transaction']} per transaction)",
         f"raw asyncpg commit-per-write {writers['raw_commit_per_write_per_s']:,}/s",
         f"{writers['ratio_vs_raw']}×", ""),
        *shared,
    ]  # fmt: skip


def performance_page(results: Results) -> str:
    """docs/performance.md, whole."""
    ops = results["state_ops"]
    table = "\n".join(f"| {' | '.join(row)} |" for row in rows(results))
    postgres_note = POSTGRES_NOTE if "state_ops_postgres" in results else ""
    return f"""# Performance

Every figure below comes from `make bench` (`python bench/run_all.py`), which runs the
scripts in `bench/` one after another, each in a fresh process, each printing one JSON
line with its own figures and the baseline it measured **in the same run** (raw
`sqlite3` with the same pragmas, or plain jinja2, or a bare Python process). Compare
the ratios, not the absolute times: they move with the disk and the machine's load.

Last run: {ops.get("date", "unknown")}, {ops.get("machine", "unknown")}, {ops["cpus"]} CPUs, \
Python {ops["python"]}.
Durability: every stateward write is acknowledged only after its transaction committed
with `synchronous=FULL`, as the baseline's.

| figure | stateward | baseline (same run) | ratio | target |
|---|---|---|---|---|
{table}

"The thread floor" is raw sqlite3 committing each write in a dedicated thread called
from trio: what any design pays that keeps disk I/O off trio's thread (two thread
wake-ups per write, about 0.05 ms each on this machine). stateward's sync `set` pays two
more (the task's worker thread to trio and back), which is why it stays above 1.5× the
in-thread raw commit.

The isolated per-op figures of the table are each side's median of 7 rounds of 1,000
calls, the two sides alternating in one run (a single 2,000-call loop per side, as
before, moved by a third from run to run: 2.68–3.27× for `aget` on one quiet
afternoon). `python bench/isolated_calls.py` (not part of `make bench`) measures that
call alone: 15 rounds of 1,000 per mode, alternating in and out of process, with the
CPU per call of the task process and of the runtime. On 2026-11-29 at load 1.0: median
round 0.081 ms isolated against 0.028 ms in process (2.87×); CPU per call 0.026 ms in
the task process and 0.054 ms in the runtime (the whole in-process call: 0.032 ms).

The raw JSON lines are in `bench/results.jsonl`; `python bench/run_all.py --docs-only`
rewrites this page (and the figures quoted in docs/isolation.md and docs/scaling.md)
from them without measuring. Run one script alone with `python bench/NAME.py --help`
for its options.
{postgres_note}{against_release(results)}
{AIRFLOW}"""


#: (label, figure name in against_release, whether higher is better, bound)
RELEASE_FIGURES = [
    ("sync `set` (SQLite)", "sqlite_state_ops_sync_set_ms", False, "within noise"),
    ("sync `get` (SQLite)", "sqlite_state_ops_sync_get_ms", False, "within noise"),
    ("async `aset` (SQLite)", "sqlite_state_ops_async_aset_ms", False, "within noise"),
    ("async `aget` (SQLite)", "sqlite_state_ops_async_aget_ms", False, "within noise"),
    ("64 concurrent writers, writes/s (SQLite)",
     "sqlite_concurrent_writers_stateward_writes_per_s", True, ""),
    ("10,000 mapped instances, run (s)", "sqlite_mapped_run_seconds", False, "≤ 1.3×"),
    ("10,000 mapped instances, peak RSS (MB)", "sqlite_mapped_peak_rss_mb", False, "≤ 1.3×"),
    ("one-task `stateward run`, wall (s)", "sqlite_cli_run_stateward_run_seconds", False,
     "≤ 1.3×"),
    ("one-task `stateward run`, peak RSS (MB)", "sqlite_cli_run_stateward_peak_rss_mb",
     False, "≤ 1.3×"),
    ("sync `set` (PostgreSQL)", "postgres_state_ops_sync_set_ms", False, "within noise"),
    ("sync `get` (PostgreSQL)", "postgres_state_ops_sync_get_ms", False, "within noise"),
    ("async `aset` (PostgreSQL)", "postgres_state_ops_async_aset_ms", False, "within noise"),
    ("async `aget` (PostgreSQL)", "postgres_state_ops_async_aget_ms", False, "within noise"),
    ("64 concurrent writers, writes/s (PostgreSQL)",
     "postgres_concurrent_writers_stateward_writes_per_s", True, ""),
]  # fmt: skip


def against_release(results: Results) -> str:
    """performance.md's side-by-side table against the release before durable runs."""
    line = results.get("against_release")
    if line is None:
        return ""
    rows = []
    for label, name, higher_is_better, bound in RELEASE_FIGURES:
        if f"{name}_ratio" not in line:
            continue
        spread = line[f"{name}_current_spread"]
        rows.append(
            f"| {label} | {line[f'{name}_release']:g} | {line[f'{name}_current']:g} "
            f"| {line[f'{name}_ratio']}×{' (higher is better)' if higher_is_better else ''} "
            f"| ±{spread * 50:.0f}% | {bound} |"
        )
    table = "\n".join(rows)
    return f"""
## Against the release before durable runs

`bench/against_release.py` installs release `{line["release"]}` (the last commit
before run records, leases, fencing and history) in a virtualenv of its own and runs
both sides' own benchmark scripts in {line["rounds"]} alternating rounds on the same
machine, so the two columns compare even when the machine's speed moves between days.
Each cell is the median over the rounds; "spread" is half the range of this
checkout's rounds, relative to its median: a ratio within it is within noise.

| figure | release | this checkout | ratio | spread | bound |
|---|---|---|---|---|---|
{table}
"""


def isolation_costs(results: Results) -> str:
    """docs/isolation.md's table of what isolation costs, and the memory it takes."""
    iso = results["isolation"]
    load = (iso.get("load_average_at_start"), iso.get("load_average_at_end"))
    lines = [
        f"From the last `make bench` ({iso.get('date', 'unknown')}, {iso['cpus']} CPUs, "
        f"the {STORES[iso['store']]} store, load average {load[0]} at the start and "
        f"{load[1]} at the end;\nalso in [Performance](performance.md)):",
        "",
        "| | in process | isolated | ratio |",
        "|---|---:|---:|---:|",
    ]
    for label, name in [
        ("`set` (sync task), ms per op", "set"),
        ("`get` (sync task), ms per op", "get"),
        ("`aset` (async task), ms per op", "aset"),
        ("`aget` (async task), ms per op", "aget"),
        ("a one-task run, ms (median)", "one_task_run"),
        ("a one-task run, ms of CPU (all processes)", "one_task_run_cpu"),
    ]:
        inside, isolated = iso[f"in_process_{name}_ms"], iso[f"isolated_{name}_ms"]
        lines.append(f"| {label} | {_ms(inside)} | {_ms(isolated)} | {iso[f'ratio_{name}']} |")
    for label, name in [
        (f"{iso['fanout']:,} mapped instances (set + get each), s", "fanout_s"),
        (f"{iso['fanout']:,} mapped instances, s of CPU (all processes)", "fanout_cpu_s"),
    ]:
        inside, isolated = iso[f"in_process_{name}"], iso[f"isolated_{name}"]
        lines.append(f"| {label} | {_ms(inside)} | {_ms(isolated)} | {iso[f'ratio_{name}']} |")
    lines += [
        "",
        f"An isolated one-task run costs {iso['isolated_one_task_overhead_ms']:.1f} ms more "
        "than one in process (the median of",
        f"{iso['runs']} runs); a task process takes {iso['task_process_minor_faults']:,} "
        "minor page faults (pages it copies",
        "from its template or touches first), a figure the machine's load does not move. "
        "Memory: the",
        f"template {iso['template_peak_rss_mb']:.0f} MB resident at its peak; a task process "
        f"{iso['task_process_rss_mb']:.0f} MB resident, of which",
        f"{iso['task_process_private_mb']:.0f} MB its own (the rest shared with the template); "
        f"the largest task process seen during the mapped run",
        f"{iso['task_process_peak_rss_mb']:.0f} MB at its peak, with at most "
        f"{iso['most_task_processes']} at once (`max_active_tasks` "
        f"{iso['max_active_tasks']}); the runtime and everything it started",
        f"{iso['isolated_fanout_peak_pss_mb']:.0f} MB together at the peak of the mapped run "
        f"(proportional set size: shared pages counted once), against "
        f"{iso['in_process_fanout_peak_pss_mb']:.0f} MB in process.",
    ]
    return "\n".join(lines)


def scaling_figures(results: Results) -> str:
    """docs/scaling.md's SQLite-against-PostgreSQL table and the prose on its figures."""
    lite, pg = results["state_ops"], results.get("state_ops_postgres")
    lite_w, pg_w = results["concurrent_writers"], results.get("concurrent_writers_postgres")
    if pg is None or pg_w is None:
        return "The last `make bench` found no PostgreSQL server, so it has no figures here."
    rows = [
        ("sync `set`, durable", "sync_set_ms"),
        ("sync `get`", "sync_get_ms"),
        ("async `aset`, durable", "async_aset_ms"),
        ("async `aget`", "async_aget_ms"),
    ]
    lines = [
        f"From the last `make bench` ({pg.get('date', 'unknown')}, {pg['cpus']} CPUs, "
        "PostgreSQL on loopback;\nthe same figures as in [Performance](performance.md), "
        "with their raw baselines):",
        "",
        "| | SQLite (`synchronous=FULL`) | PostgreSQL (`synchronous_commit=on`) |",
        "|---|---|---|",
        *(f"| {label} | {_ms(lite[key])} ms | {_ms(pg[key])} ms |" for label, key in rows),
        f"| 64 concurrent durable writers | {lite_w['stateward_writes_per_s']:,} writes/s "
        f"| {pg_w['stateward_writes_per_s']:,} writes/s |",
        f"| raw baseline: one committed upsert | {_ms(lite['raw_commit_per_write_ms'])} ms "
        f"(sqlite3) | {_ms(pg['raw_commit_per_write_ms'])} ms (asyncpg) |",
        "",
        "A lone PostgreSQL operation costs a round trip to the server plus the trio → "
        "asyncio\nhop of trio-asyncio: raw asyncpg sending the same upsert from trio "
        f"through trio-asyncio\ntakes {_ms(pg['raw_commit_via_trio_asyncio_ms'])} ms, and "
        f"stateward's `aset` {pg['ratio_async_aset_vs_trio_asyncio_floor']}× that. "
        "Concurrent writers share one\ntransaction per batch and send a batch's `set`s "
        "as one statement (their history\nas one more), so 64 of them reach "
        f"{pg_w['ratio_vs_raw']}× raw asyncpg committing each write.",
    ]
    return "\n".join(lines)


def airflow_compare(results: Results) -> str:
    """docs/airflow.md's comparison with ``airflow dags test`` (bench/airflow_compare.py)."""
    af = results.get("airflow_compare")
    if af is None:
        return (
            "Not measured yet: `bench/airflow_compare.py` needs a virtualenv with Airflow "
            "(`STATEWARD_BENCH_AIRFLOW_VENV`)."
        )
    return "\n".join([
        f"Measured by `bench/airflow_compare.py` ({af.get('date', 'unknown')}, "
        f"{af['cpus']} CPUs, Airflow {af['airflow']}\nin a throwaway virtualenv; "
        "the machine was shared with other work, so read the ratios):",
        "",
        "| the same one-task Airflow Dag file | time | Airflow's time over it |",
        "|---|---:|---:|",
        f"| `airflow dags test one_task` | {af['airflow_dags_test_s']} s | 1 |",
        f"| `stateward run one_task.py` | {af['stateward_run_s']} s "
        f"| {af['ratio_airflow_vs_stateward_run']}× |",
        f"| a test with the harness: open, `load_dag`, `run_dag`, close "
        f"| {_ms(af['harness_test_ms'])} ms | {af['ratio_airflow_vs_harness_test']:,}× |",
        f"| of which loading the file and running it | {_ms(af['harness_load_and_run_ms'])} ms "
        "| |",
        f"| of which running it | {_ms(af['harness_run_ms'])} ms | |",
    ])  # fmt: skip


def history_costs(results: Results) -> str:
    """docs/task-state.md's figures of what history costs (bench/history.py)."""
    h = results.get("history")
    if h is None:
        return "The last `make bench` did not run `bench/history.py`, so it has no figures here."
    lines = [
        f"From the last `make bench` ({h.get('date', 'unknown')}, {h['cpus']} CPUs, SQLite "
        "with `synchronous=FULL`,",
        "on a machine shared with other work: compare the ratios, not the times):",
        "",
        "| | ms per operation | against | ratio |",
        "|---|---:|---|---:|",
        f"| durable `aset`, `history=10` | {_ms(h['history_on_set_ms'])} "
        f"| `history=0`: {_ms(h['history_off_set_ms'])} ms "
        f"| {h['history_write_ratio']:.2f}× |",
    ]
    if "history_on_pages_per_set" in h:
        lines.append(
            "| pages one durable `aset` commits, `history=10` "
            f"| {h['history_on_pages_per_set']:.2f} "
            f"| `history=0`: {h['history_off_pages_per_set']:.2f} "
            f"| {h['history_on_pages_per_set'] / h['history_off_pages_per_set']:.2f}× |"
        )
    pg = results.get("history_postgres")
    if pg is not None:
        lines.append(
            f"| PostgreSQL: durable `aset`, `history=10` | {_ms(pg['history_on_set_ms'])} "
            f"| `history=0`: {_ms(pg['history_off_set_ms'])} ms "
            f"| {pg['history_write_ratio']:.2f}× |"
        )
    if pg is not None and "history_cpu_ratio" in pg:
        cpu = {side: (pg[f"history_{side}_set_cpu_us"] + pg[f"history_{side}_set_server_us"])
               / 1000 for side in ("on", "off")}  # fmt: skip
        lines.append(
            "| PostgreSQL: CPU of a durable `aset` (runtime + server), `history=10` "
            f"| {_ms(cpu['on'])} | `history=0`: {_ms(cpu['off'])} ms "
            f"| {pg['history_cpu_ratio']:.2f}× |"
        )
    return "\n".join(
        [
            *lines,
            f"| `aget`, {h['big_keys']:,} keys × {h['versions']} versions "
            f"| {_ms(h['big_get_ms'])} | 1,000 keys: {_ms(h['small_get_ms'])} ms "
            f"| {h['big_get_ratio']:.2f}× |",
            f"| `aset`, {h['big_keys']:,} keys × {h['versions']} versions "
            f"| {_ms(h['big_set_ms'])} | 1,000 keys: {_ms(h['small_set_ms'])} ms "
            f"| {h['big_set_ratio']:.2f}× |",
        ]
    )


def _ms(value: float) -> str:
    """Three significant digits, never in scientific notation."""
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def ui_costs(results: Results) -> str:
    """docs/ui.md's server-side times of the grid and of one page of keys."""
    ui = results["ui_pages"]
    keys = f"{ui['keys']:,}"
    without = []
    if "grid_without_graph_ms" in ui:
        ratio = round(ui["grid_without_graph_ms"] / ui["raw_grid_ms"], 1)
        without = [
            f"| the same grid, its runs recorded without their Dag's graph "
            f"| {_ms(ui['grid_without_graph_ms'])} ms | {_ms(ui['raw_grid_ms'])} ms | {ratio}× |"
        ]
    wide = []
    if "one_key_ms" in ui:
        n = f"{ui['wide_keys']:,}"
        wide = [
            f"| one key of an instance of {n} keys (`GET .../state-store/KEY`) "
            f"| {_ms(ui['one_key_ms'])} ms | {_ms(ui['raw_one_key_ms'])} ms "
            f"| {ui['ratio_one_key_vs_raw']}× |",
            f"| the last page of 100 of those {n} keys, with `total_entries` "
            f"| {_ms(ui['wide_page_ms'])} ms | {_ms(ui['raw_wide_page_ms'])} ms "
            f"| {ui['ratio_wide_page_vs_raw']}× |",
        ]
    return "\n".join([
        "| request (server side, SQLite) | `stateward ui` | raw SQL, same rows | ratio |",
        "|---|---|---|---|",
        f"| grid of {ui['runs']} runs × {ui['tasks']} tasks (`GET /?limit={ui['runs']}`) "
        f"| {_ms(ui['grid_ms'])} ms | {_ms(ui['raw_grid_ms'])} ms | {ui['ratio_grid_vs_raw']}× |",
        *without,
        f"| one page of 100 keys from a store of {keys} keys "
        f"| {_ms(ui['keys_page_ms'])} ms | {_ms(ui['raw_keys_page_ms'])} ms "
        f"| {ui['ratio_keys_page_vs_raw']}× |",
        *wide,
    ])  # fmt: skip


#: Each page's regions and what writes them.
REGIONS: dict[str, dict[str, Callable[[Results], str]]] = {
    "docs/isolation.md": {"isolation-costs": isolation_costs},
    "docs/scaling.md": {"postgres-figures": scaling_figures},
    "docs/airflow.md": {"airflow-compare": airflow_compare},
    "docs/ui.md": {"ui-costs": ui_costs},
    "docs/task-state.md": {"history-costs": history_costs},
}


def replace_regions(text: str, regions: dict[str, str], page: str) -> str:
    """``text`` with each named region's body replaced; a missing region is an error."""
    for name, body in regions.items():
        pattern = re.compile(
            rf"(<!-- bench:{re.escape(name)} -->\n)(?:.*?\n)?(<!-- /bench:{re.escape(name)} -->)",
            re.DOTALL,
        )
        found = pattern.search(text)
        if found is None:
            msg = f"{page} has no region <!-- bench:{name} --> ... <!-- /bench:{name} -->"
            raise ValueError(msg)
        text = f"{text[: found.end(1)]}{body}\n{text[found.start(2) :]}"
    return text


def pages(results: Results, root: Path = ROOT) -> dict[Path, str]:
    """Every page with figures, as the results make it."""
    made = {root / "docs" / "performance.md": performance_page(results)}
    for page, regions in REGIONS.items():
        path = root / page
        bodies = {name: write(results) for name, write in regions.items()}
        made[path] = replace_regions(path.read_text(), bodies, page)
    return made
