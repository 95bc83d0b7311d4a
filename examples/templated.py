"""Templated shell commands that read task state and asset state.

An export job is started by a shell command whose template reads the watermark kept
on the ``invoices`` asset (``<< asset_state.watermark >>``) and, on a retry, the job
id its first try kept in task state (``<< task_state.job_id >>``), so the retry
reattaches to that job instead of starting a second one. Run it twice against the
same database and the second run exports from where the first stopped::

    python examples/templated.py --db stateward.db
    python examples/templated.py --db stateward.db
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

from stateward import Asset, AssetStateAccessors, Dag, run_dag
from stateward._operators import ShellOperator

INVOICES = Asset("invoices", uri="warehouse://billing/invoices")
BATCH = 100

# A stand-in for a job scheduler's CLI: submitting prints a new job id. The template
# picks the branch: a try that finds a job id in task state reattaches to that job.
EXPORT_COMMAND = """\
<%- if 'job_id' in task_state -%>
echo "reattaching to << task_state.job_id >>" >&2
job=<< task_state.job_id >>
<%- else -%>
echo "submitting an export of $BATCH invoices after << asset_state.watermark >>" >&2
job="job-$$"
<%- endif %>
echo "$job"
"""


class ExportJob(ShellOperator):
    """Start the export job, or reattach to the one an earlier try started.

    The command prints the job id, which is kept in task state. The first try then
    loses its connection to the job (simulated), so its retry renders the command
    again, with the job id, and reattaches.
    """

    async def execute(self, context: Mapping[str, Any]) -> str:
        job_id = await super().execute(context)
        await context["task_state"].aset("job_id", job_id)
        if context["ti"].try_number == 1:
            msg = f"lost the connection to {job_id} (simulated); the retry reattaches"
            raise ConnectionError(msg)
        return job_id


dag = Dag("templated_export", description="Export new invoices with a templated command.")


@dag.task(outlets=[INVOICES])
def plan(asset_state: AssetStateAccessors[Any]) -> int:
    """Start the watermark at 0 the first time the Dag runs."""
    asset_state.compare_and_set("watermark", None, 0)
    watermark: int = asset_state.get("watermark")
    return watermark


extract = ExportJob(
    task_id="extract",
    dag=dag,
    command=EXPORT_COMMAND,
    env={"BATCH": str(BATCH)},
    inlets=[INVOICES],
    retries=1,
    clear_state_on_success=True,
)


@dag.task(outlets=[INVOICES], op_kwargs={"since": "<< asset_state.watermark >>"})
def commit(since: str, asset_state: AssetStateAccessors[Any]) -> str:
    """Move the watermark past the exported batch."""
    watermark = asset_state.increment("watermark", BATCH)
    return f"watermark {since} -> {watermark}"


plan >> extract >> commit


def main(argv: list[str] | None = None) -> int:
    """Run the Dag once and print what each try rendered and returned."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--db",
        default=None,
        help="SQLite file for state (default: $STATEWARD_DB, then ./stateward.db)",
    )
    args = parser.parse_args(argv)
    outcome = run_dag(dag, db=args.db)
    print(f"run {outcome.run_id}: {outcome.state}")
    for ti in outcome.task_instances:
        tries = "1 try" if ti.try_number == 1 else f"{ti.try_number} tries"
        print(f"{ti.task_id}: {ti.state} after {tries}, result {ti.result!r}")
        for attempt in ti.attempts:
            ended = "ok" if attempt.error is None else f"failed: {attempt.error}"
            print(f"  try {attempt.try_number} {ended}")
            for field, value in attempt.rendered.items():
                if isinstance(value, str) and "\n" in value.rstrip("\n"):
                    lines = value.rstrip("\n").splitlines()
                    print(f"    rendered {field}:", *(f"      {line}" for line in lines), sep="\n")
                else:
                    print(f"    rendered {field}: {value!r}")
    return 0 if outcome.state == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
