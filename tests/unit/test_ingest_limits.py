"""Pure pieces of issue 9's ingest hardening: live events under the size limit, error texts
without tenants' data, the bridge's client id."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from sqlalchemy.exc import IntegrityError

from fogline.bus.bridge import bridge_client_id
from fogline.bus.refusals import ClosedConnection, refusal_of
from fogline.ingest.historian import describe_error, live_events


def test_live_events_are_split_under_the_limit_in_order() -> None:
    readings = [{"ts": 1_700_000_000_000 + i, "values": {"rpm": i}} for i in range(42_000)]
    events = list(live_events("acme", "m1", readings, limit=256 * 1024))
    assert len(events) > 4
    assert all(len(e) <= 256 * 1024 for e in events)
    decoded = [orjson.loads(e) for e in events]
    assert all((d["tenant"], d["asset"]) == ("acme", "m1") for d in decoded)
    assert [r for d in decoded for r in d["readings"]] == readings


def test_a_small_batch_is_one_live_event_and_a_huge_reading_goes_alone() -> None:
    assert len(list(live_events("t", "a", [{"ts": 1, "values": {"v": 1}}] * 10, 1024))) == 1
    huge = {"ts": 1, "values": {"s": "x" * 5000}}
    events = list(live_events("t", "a", [huge, huge], 1024))
    assert len(events) == 2


def test_error_texts_keep_the_driver_message_not_the_statement() -> None:
    exc = IntegrityError("INSERT INTO readings VALUES (?)", ("secret value",), Exception("boom"))
    assert describe_error(exc) == "Exception: boom"
    assert "secret" not in describe_error(exc)
    assert len(describe_error(ValueError("x" * 1000))) < 320


def test_bridge_client_id_is_stable_and_not_guessable(tmp_path: Path) -> None:
    first = bridge_client_id("fogline", tmp_path)
    assert (
        first.startswith("fogline-bridge-fogline-")
        and len(first) == len("fogline-bridge-fogline-") + 24
    )
    assert bridge_client_id("fogline", tmp_path) == first
    assert (tmp_path / "bridge-client-id").stat().st_mode & 0o077 == 0
    other = tmp_path / "other"
    other.mkdir()
    assert bridge_client_id("fogline", other) != first


@pytest.mark.parametrize(
    ("user", "account", "device"),
    [
        ("acme.gw1", "tenant_acme", ("acme", "gw1")),
        ("acme.gw1", "tenant_beta", None),  # a user name and account that disagree
        ("fogline-platform", "FOGLINE", None),
    ],
)
def test_closed_connections_name_a_device_only_in_its_own_account(
    user: str, account: str, device: tuple[str, str] | None
) -> None:
    closed = ClosedConnection(account, user, "gw1", "Maximum Message Payload Exceeded")
    assert closed.over_max_payload
    assert closed.device == device


def test_refusal_markers() -> None:
    assert refusal_of(None) is None
    assert refusal_of({"Nmqtt-Pub": "1"}) is None
    assert refusal_of({"Fogline-Refused": "something-else"}) is None
    marked = {"Fogline-Refused": "too-large", "Fogline-Refused-Detail": "message is 9 bytes"}
    assert refusal_of(marked) == "message is 9 bytes"
