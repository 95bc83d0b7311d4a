"""Messages: frozen attrs classes, and their wire form through one tagged converter."""

from __future__ import annotations

import json

import attrs
import pytest

from stateward import ProtocolError
from stateward._protocol import messages as m
from stateward._protocol.converter import decode, decode_frame, encode
from stateward._protocol.frames import RequestFrame
from stateward._protocol.wire import pack_request
from stateward._records import (
    AssetEvent,
    AssetInfo,
    AttemptRecord,
    DagRunRecord,
    ItemPlace,
    LeaseAnswer,
    StateEntry,
    StateVersion,
    StateWriter,
    TaskInstanceRecord,
)

NESTED = {"a": [1, 2.5, True, "x", {"b": []}], "n": -3}

SAMPLES: list[object] = [
    m.GetTaskState("job_id"),
    m.SetTaskState("job_id", "J-1"),
    m.SetTaskState("cfg", NESTED, expires_at=1_700_000_000.5),
    m.DeleteTaskState("job_id"),
    m.ClearTaskState(),
    m.ClearTaskState(all_map_indices=True),
    m.IncrementTaskState("n", 3, None),
    m.CompareAndSetTaskState("k", None, [1, 2]),
    m.CompareAndSetTaskState("k", {"a": 1}, {"a": 2}, 5.0),
    m.ListTaskState(),
    m.GetTaskStateHistory("job_id"),
    m.RollbackTaskState("job_id", 3),
    m.RollbackTaskState("job_id", 4, 9.5),
    m.GetAssetStateByName("orders", "watermark"),
    m.GetAssetStateByUri("s3://b/o", "watermark"),
    m.SetAssetStateByName("orders", "watermark", 41),
    m.SetAssetStateByUri("s3://b/o", "watermark", 42.5, 9.0),
    m.DeleteAssetStateByName("orders", "k"),
    m.DeleteAssetStateByUri("s3://b/o", "k"),
    m.ClearAssetStateByName("orders"),
    m.ClearAssetStateByUri("s3://b/o"),
    m.IncrementAssetStateByName("orders", "runs"),
    m.IncrementAssetStateByUri("s3://b/o", "runs", -2),
    m.CompareAndSetAssetStateByName("orders", "lock", None, "me"),
    m.CompareAndSetAssetStateByUri("s3://b/o", "lock", "me", "you", 1.0),
    m.ListAssetStateByName("orders"),
    m.ListAssetStateByUri("s3://b/o"),
    m.GetAssetStateHistoryByName("orders", "watermark"),
    m.GetAssetStateHistoryByUri("s3://b/o", "watermark"),
    m.RollbackAssetStateByName("orders", "watermark", 2),
    m.RollbackAssetStateByUri("s3://b/o", "watermark", 2, 1.0),
    m.GetAssetsByAlias("daily"),
    m.AddAssetEvent("orders", "s3://b/o", {"rows": 3}, "daily"),
    m.AddAssetEvent("orders", "s3://b/o"),
    m.ListState(scope="task", dag_id="d", map_index=2),
    m.ListState(scope="asset", asset_name="orders", key="k", limit=10, offset=20),
    m.CountState(m.ListState(scope="task", dag_id="d", run_id="r", task_id="t")),
    m.CountResult(7),
    m.CleanupExpired(dry_run=True),
    m.CleanupExpired(orphans_before=5.0),
    m.RecordTaskItem("d", "r", "t", 2, "j:abc", '"a"'),
    m.RecordTaskItem("d", "r", "t", 0, "#0"),
    m.RecordTaskItems("d", "r", "t", ((0, "j:abc", '"a"'), (1, "#1", None))),
    m.ListTaskItems("d", "r"),
    m.TaskItemsResult((ItemPlace("t", 0, '"a"'), ItemPlace("t", 1))),
    m.DeclareAssets((AssetInfo("orders", "s3://b/o"), AssetInfo("x", "x"))),
    m.GetAssetByRef(name="orders"),
    m.TaskStateResult("job_id", "J-1"),
    m.TaskStateResult("job_id", None),
    m.AssetStateResult("watermark", NESTED),
    m.IncrementResult("n", 7),
    m.CompareAndSetResult("k", True),
    m.StateItemsResult({"a": 1, "b": NESTED}),
    m.StateHistoryResult(
        "w",
        (
            StateVersion(2, None, True, 2.0, StateWriter(kind="cli", user="u", host="h")),
            StateVersion(
                1,
                NESTED,
                False,
                1.0,
                StateWriter(
                    kind="task",
                    dag_id="d",
                    run_id="r",
                    task_id="t",
                    map_index=-1,
                    try_number=1,
                    host="h",
                    rollback_to=None,
                ),
            ),
        ),
    ),
    m.AssetsByAliasResult((AssetInfo("orders", "s3://b/o"),)),
    m.AssetsByAliasResult(()),
    m.AssetResult(AssetInfo("orders", "s3://b/o")),
    m.AssetResult(None),
    m.StateEntriesResult(
        (
            StateEntry("task", "k", 1, 1.0, None, "d", "r", "t", -1, writer="d/r/t try 1"),
            StateEntry("asset", "w", [1], 2.0, 3.0, asset_name="a", asset_uri="u"),
        )
    ),
    m.CleanupResult(4),
    m.RecordDagRun("d", "r", "success", 1.5, 2.5),
    m.EndDagRun("d", "r", 1.5, 2.5, (("t", -1), ("u", 0))),
    m.DagRunEndedResult("queued"),
    m.RecordTaskInstance("d", "r", "t", 3, "upstream_failed", 0),
    m.RecordTaskAttempt(
        "d",
        "r",
        "t",
        -1,
        "failed",
        AttemptRecord(
            2,
            "failed",
            1.0,
            2.0,
            "ValueError",
            "bad",
            "Traceback...",
            {"cmd": "echo 1"},
            None,
            True,
            "host",
            42,
        ),
    ),
    m.ListDagRuns(dag_id="d", state="failed", limit=5),
    m.GetDagRun("d", "r"),
    m.GetDagRun("d", "r", attempts=False),
    m.ListAssetEvents(name="orders", limit=5),
    m.AssetEventsResult((AssetEvent("orders", "s3://o", 1.0, {"n": 1}, "daily", "d", "r"),)),
    m.DagRunsResult((DagRunRecord("d", "r", "running", 1.0),)),
    m.DagRunRecordResult(
        DagRunRecord(
            "d",
            "r",
            "failed",
            1.0,
            2.0,
            (
                TaskInstanceRecord(
                    "t",
                    -1,
                    "failed",
                    1,
                    1.0,
                    2.0,
                    (AttemptRecord(1, "failed", 1.0, 2.0, result={"rows": [1]}),),
                ),
            ),
        )
    ),
    m.DagRunRecordResult(None),
    m.GetTaskInstanceRecord("d", "r", "t", 2),
    m.ClearDagRun("d", "r", ("t", "u"), failed_only=True, keep_task_state=True),
    m.ClearDagRun("d", "r"),
    m.CleanupDagRuns(12.5, dry_run=True),
    m.TaskInstanceRecordResult(
        TaskInstanceRecord(
            "t", 2, "running", 1, 1.0, None, (AttemptRecord(1, "running", 1.0, log="hi\n"),)
        )
    ),
    m.TaskInstanceRecordResult(None),
    m.ClearedResult((("t", -1), ("u", 3))),
    m.ClearedResult(None),
    m.AcquireTaskLease("d", "r", "t", 2, "rt-1", 1.5, 1, AttemptRecord(0, "running", 1.0)),
    m.RenewTaskLeases("rt-1", 30.0),
    m.FindUnheldInstances("rt-1", (("d", "r", "t", 2, 1),)),
    m.ReleaseTaskLeases("rt-1"),
    m.LeaseResult(LeaseAnswer("held", 2, "rt-2", 99.5)),
    m.LeaseResult(
        LeaseAnswer("finished", 2, instance=TaskInstanceRecord("t", 2, "success", 2, 1.0, 2.0))
    ),
    m.RenewedLeasesResult((("d", "r", "t", 2, 3),)),
    m.UnheldResult((0, 2)),
    m.OkResponse(),
    m.ErrorResponse(m.ErrorType.SCOPE_DENIED, "no", key="k"),
]


def test_samples_cover_every_message_type() -> None:
    """The round-trip samples include every message class of the protocol."""
    assert {type(s).__name__ for s in SAMPLES} == set(m.MESSAGE_TYPES)


@pytest.mark.parametrize("message", SAMPLES, ids=lambda s: type(s).__name__)
def test_round_trip_through_json(message: object) -> None:
    """encode() gives a JSON-ready dict with a type tag; decode() gives the message back."""
    wire = encode(message)  # type: ignore[arg-type]
    assert wire["type"] == type(message).__name__
    assert decode(json.loads(json.dumps(wire))) == message


@pytest.mark.parametrize("cls", list(m.MESSAGE_TYPES.values()), ids=lambda c: c.__name__)
def test_messages_are_frozen(cls: type) -> None:
    """Every message class is a frozen attrs class."""
    assert attrs.has(cls)
    sample = next(s for s in SAMPLES if type(s) is cls)
    fields = attrs.fields(cls)
    if fields:
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            setattr(sample, fields[0].name, None)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"type": "Nope"}, r"unknown message type 'Nope'; known types: AcquireTaskLease, AddAssetEvent, "),
        ({"key": "k"}, r"unknown message type None"),
        ({"type": "GetTaskState"}, r"bad GetTaskState message: required field missing @ GetTaskState\.key"),
        ({"type": "GetTaskState", "key": 3}, r"bad GetTaskState message: .*expected str @ GetTaskState\.key"),
        ({"type": "GetTaskState", "key": "k", "extra": 1}, r"extra fields found \(extra\)"),
        ({"type": "ClearTaskState", "all_map_indices": "yes"}, r"expected bool"),
        ({"type": "IncrementTaskState", "key": "k", "by": True}, r"expected int"),
        ({"type": "IncrementTaskState", "key": "k", "by": 1.5}, r"expected int"),
        ({"type": "SetTaskState", "key": "k", "value": 1, "expires_at": "soon"}, r"SetTaskState\.expires_at"),
        ({"type": "ErrorResponse", "error": "bogus", "detail": "d"}, r"ErrorResponse\.error"),
        ({"type": "AssetsByAliasResult", "assets": [{"name": "a"}]}, r"assets"),
        ([1, 2], r"a message must be a dict with a 'type' tag, got list"),
        ("GetTaskState", r"got str"),
    ],
)  # fmt: skip
def test_decode_refuses_bad_input(data: object, match: str) -> None:
    """decode() names the unknown type or the bad field, never guesses."""
    with pytest.raises(ProtocolError, match=match):
        decode(data)


def test_decode_keeps_ints_and_floats_apart_in_values() -> None:
    """Values are JSON: an int stays an int and a float a float."""
    decoded = decode({"type": "SetTaskState", "key": "k", "value": [1, 1.0, True]})
    assert isinstance(decoded, m.SetTaskState)
    assert [type(v) for v in decoded.value] == [int, float, bool]


def test_int_is_accepted_for_a_float_field() -> None:
    """An integral expires_at (as JSON may send it) is read as a float."""
    decoded = decode({"type": "SetTaskState", "key": "k", "value": 1, "expires_at": 5})
    assert decoded == m.SetTaskState("k", 1, 5.0)


# -- frames and the request frame a task process sends -------------------------------------


@pytest.mark.parametrize("message", [s for s in SAMPLES if isinstance(s, m.Request.__args__)])
def test_a_request_frame_with_spliced_values_reads_back_as_the_request(message: m.Request) -> None:
    """pack_request puts each value's JSON text in as it is; the parent reads the same request."""
    values = [(name, json.dumps(value)) for name, value in m.state_values(message)]
    data = pack_request(7, message, values)
    assert decode_frame(json.loads(data[4:])) == RequestFrame(7, message)
    assert int.from_bytes(data[:4], "big") == len(data) - 4


def test_state_values_are_the_fields_declared_to_hold_them() -> None:
    """Value fields come from the message's declaration; CAS's absent ``expected`` is none."""
    assert m.state_values(m.SetTaskState("k", [1])) == [("value", [1])]
    assert m.state_values(m.CompareAndSetTaskState("k", None, 2)) == [("new", 2)]
    assert m.state_values(m.CompareAndSetAssetStateByUri("u", "k", 1, 2)) == [
        ("expected", 1),
        ("new", 2),
    ]
    assert m.state_values(m.IncrementTaskState("k")) == []
    assert m.state_values(m.OkResponse()) == []


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"kind": "response", "id": 1, "msg": encode(m.GetTaskState("k"))},
         r"^a response frame must hold a response, got a GetTaskState"),
        ({"kind": "request", "id": 1, "msg": {"type": "Nope"}}, r"^unknown message type 'Nope'"),
        ({"kind": "rendered"}, r"^a rendered frame holds \['fields', 'kind'\], got \['kind'\]"),
        ({"kind": 3}, r"^a frame of unknown kind 3"),
        (["start"], r"^a frame must be a JSON object, got list"),
    ],
)  # fmt: skip
def test_decode_frame_refuses_bad_frames(data: object, match: str) -> None:
    """Frames decode strictly; a bad message inside reads as decode() words it."""
    with pytest.raises(ProtocolError, match=match):
        decode_frame(data)
