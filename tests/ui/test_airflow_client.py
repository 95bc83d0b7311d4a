"""A running ``stateward ui`` driven by the real ``apache-airflow-client`` package, unchanged."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import airflow_client.client as af
import pytest
from airflow_client.client.exceptions import NotFoundException, UnauthorizedException

from .server import running_ui, seed

TOKEN = "airflow-client-token"


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db: Path = tmp_path_factory.mktemp("ui") / "state.db"
    seed(db)
    with running_ui(db, TOKEN) as url:
        yield url


def client(base_url: str, token: str = TOKEN) -> af.ApiClient:
    return af.ApiClient(af.Configuration(host=base_url, access_token=token))


def test_task_state_with_the_airflow_client(base_url: str) -> None:
    """TaskStateStoreApi: list, get, set, patch, delete and clear, against stateward."""
    api = af.TaskStateStoreApi(client(base_url))
    ti = {"dag_id": "etl", "dag_run_id": "r1", "task_id": "extract"}
    listed = api.list_task_state_store(**ti, map_index=0)
    assert listed.total_entries == 1
    assert listed.task_state_store[0].key == "job_id"
    assert api.get_task_state_store(key="job_id", **ti, map_index=1).value == "job-b"

    api.set_task_state_store(
        key="cursor", **ti, map_index=0,
        task_state_store_body=af.TaskStateStoreBody(value={"page": 3}, expires_at=None),
    )  # fmt: skip
    got = api.get_task_state_store(key="cursor", **ti, map_index=0)
    assert got.value == {"page": 3}
    assert got.expires_at is None
    patched = api.patch_task_state_store(
        key="cursor", **ti, map_index=0,
        task_state_store_patch_body=af.TaskStateStorePatchBody(value={"page": 4}),
    )  # fmt: skip
    assert patched["value"] == {"page": 4}
    assert api.get_task_state_store(key="cursor", **ti, map_index=0).value == {"page": 4}
    page = api.list_task_state_store(**ti, map_index=0, limit=1, offset=1)
    assert [e.key for e in page.task_state_store] == ["job_id"]
    assert page.total_entries == 2

    api.delete_task_state_store(key="cursor", **ti, map_index=0)
    with pytest.raises(NotFoundException):
        api.get_task_state_store(key="cursor", **ti, map_index=0)
    api.clear_task_state_store(**ti, all_map_indices=True)
    assert api.list_task_state_store(**ti, map_index=1).total_entries == 0
    with pytest.raises(NotFoundException):
        api.list_task_state_store(dag_id="etl", dag_run_id="r1", task_id="nope")


def test_asset_state_with_the_airflow_client(base_url: str) -> None:
    """AssetStateStoreApi: list, get, set, delete and clear, by the asset's id."""
    http = client(base_url)
    found = http.call_api("GET", f"{base_url}/api/v2/stateward/assets?name=orders",
                          header_params={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
    found.read()
    asset_id = json.loads(found.data)["asset_id"]
    api = af.AssetStateStoreApi(http)
    listed = api.list_asset_state_store(asset_id=asset_id)
    assert [(e.key, e.value) for e in listed.asset_state_store] == [("watermark", 10)]
    by = listed.asset_state_store[0].last_updated_by
    assert by is not None
    assert (by.kind.value, by.dag_id, by.task_id) == ("task", "etl", "load")

    api.set_asset_state_store(
        asset_id=asset_id, key="cursor", asset_state_store_body=af.AssetStateStoreBody(value="c1")
    )
    got = api.get_asset_state_store(asset_id=asset_id, key="cursor")
    assert got.value == "c1"
    assert got.last_updated_by is not None
    assert got.last_updated_by.kind.value == "api"
    api.delete_asset_state_store(asset_id=asset_id, key="cursor")
    with pytest.raises(NotFoundException):
        api.get_asset_state_store(asset_id=asset_id, key="cursor")
    api.clear_asset_state_store(asset_id=asset_id)
    assert api.list_asset_state_store(asset_id=asset_id).total_entries == 0
    with pytest.raises(NotFoundException):
        api.list_asset_state_store(asset_id=1)


def test_a_wrong_token_is_refused(base_url: str) -> None:
    """The client's bearer token is checked: a wrong one gets 401."""
    api = af.TaskStateStoreApi(client(base_url, token="wrong"))
    with pytest.raises(UnauthorizedException):
        api.list_task_state_store(dag_id="etl", dag_run_id="r1", task_id="load")
