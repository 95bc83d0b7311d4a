"""Asset state across runs: an incremental load keeps its watermark on the asset it loads.

Each run loads the source rows newer than the watermark stored on the ``orders``
asset, then moves the watermark and counts the run. Run it twice against the same
database and the second run continues where the first stopped::

    python examples/watermark.py --db stateward.db
    python examples/watermark.py --db stateward.db
"""

from __future__ import annotations

import argparse
from typing import Any

from stateward import Asset, AssetStateAccessors, Dag, run_dag

ORDERS = Asset("orders", uri="warehouse://sales/orders")
BATCH = 5


def fetch_orders(after_id: int, limit: int) -> list[dict[str, Any]]:
    """A stand-in source: order ids count up forever; fetch the next page."""
    return [{"id": i, "amount": (i * 37) % 100} for i in range(after_id + 1, after_id + 1 + limit)]


dag = Dag("incremental_orders", description="Load new orders after the stored watermark.")


@dag.task(outlets=[ORDERS])
def load_orders(asset_state: AssetStateAccessors[Any]) -> dict[str, Any]:
    """Load the orders after the watermark, then advance it."""
    watermark = asset_state.get("watermark", 0)
    rows = fetch_orders(after_id=watermark, limit=BATCH)
    new_watermark = rows[-1]["id"]
    asset_state.set("watermark", new_watermark)
    run_number = asset_state.increment("runs")
    print(
        f"[load #{run_number}] watermark {watermark} -> loaded orders "
        f"{rows[0]['id']}..{new_watermark} -> watermark {new_watermark}"
    )
    return {"loaded": len(rows), "watermark": new_watermark, "runs": run_number}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="stateward.db", help="SQLite file for state")
    args = parser.parse_args()
    outcome = run_dag(dag, db=args.db)
    print(f"run {outcome.run_id}: {outcome.state}, {outcome.ti('load_orders').result}")
    raise SystemExit(0 if outcome.state == "success" else 1)
