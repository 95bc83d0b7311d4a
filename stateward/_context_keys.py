"""Names of context keys: Airflow's that stateward does not provide, and why.

Below every layer: the context says what to use instead when one is asked for, and a
``@task`` function that takes one with a default is warned about when its Dag is built.
"""

from __future__ import annotations

from typing import Final

#: Airflow context keys stateward does not provide, and what to use instead.
AIRFLOW_ONLY_KEYS: Final[dict[str, str]] = {
    "logical_date": "stateward runs have no logical date; pass one as a param",
    "ds": "stateward runs have no logical date; pass one as a param",
    "ds_nodash": "stateward runs have no logical date; pass one as a param",
    "ts": "stateward runs have no logical date; pass one as a param",
    "data_interval_start": "stateward runs have no data interval; pass one as a param",
    "data_interval_end": "stateward runs have no data interval; pass one as a param",
    "dag_run": "use run_id and params",
    "conn": "stateward has no connections; read settings from params or the environment",
    "var": "stateward has no Variables; use params or asset state",
    "macros": "stateward has no macros",
    "inlet_events": "stateward does not read asset events; use asset_state",
    "triggering_asset_events": "stateward does not schedule on assets; use asset_state",
    "context": "take **context, or call get_current_context()",
}
