"""The parser of nats-server's refusals, on lines nats-server 2.15 wrote (captured with a real
paho-mqtt client and a real NATS client against the embedded server)."""

from __future__ import annotations

import pytest

from fogline.bus.security import NO_TENANT, SecurityKind, parse_refusal, tenant_and_device

MQTT_PUBLISH = (
    '[8988] 2026/12/02 00:52:03.354629 [ERR] 127.0.0.1:43225 - mid:10 - "c1" - Publish '
    'Violation - Subject "fogline.default.devices.d2.telemetry"'
)
MQTT_SUBSCRIBE = (
    '[8988] 2026/12/02 00:52:03.399107 [ERR] 127.0.0.1:43225 - mid:10 - "c1" - Subscription '
    'Violation - Subject "fogline.default.devices.d2.>", SID fogline.default.devices.d2.>'
)
MQTT_LOGIN = (
    '[8988] 2026/12/02 00:52:04.419761 [ERR] 127.0.0.1:49895 - mid:29 - "c2" - '
    'authentication error - User "default.d1"'
)
MQTT_LOGIN_FOLLOW_UP = (
    '[8988] 2026/12/02 00:52:04.420114 [ERR] 127.0.0.1:49895 - mid:29 - "c2" - '
    "unable to connect: authentication error"
)
NATS_LOGIN = (
    "[8988] 2026/12/02 00:52:06.489685 [ERR] 127.0.0.1:50118 - cid:31 - authentication error"
    ' - User "default.d1"'
)
NATS_PUBLISH = (
    '[12701] 2026/12/02 00:55:47.511305 [ERR] 127.0.0.1:38208 - cid:9 - "v2.16.0:python3" - '
    '"tenant_default/user:default.d1" - Publish Violation - Subject '
    '"fogline.default.devices.d2.telemetry"'
)
NATS_SUBSCRIBE = (
    '[12701] 2026/12/02 00:55:47.511346 [ERR] 127.0.0.1:38208 - cid:9 - "v2.16.0:python3" - '
    '"tenant_default/user:default.d1" - Subscription Violation - Subject '
    '"fogline.default.devices.d2.>", SID 1'
)


def test_an_mqtt_publish_violation_names_the_connection_not_the_user() -> None:
    r = parse_refusal(MQTT_PUBLISH)
    assert r is not None
    assert (r.kind, r.address, r.connection, r.user, r.mqtt) == (
        SecurityKind.PUBLISH_DENIED,
        "127.0.0.1:43225",
        10,
        None,
        True,
    )
    assert r.subject == "fogline.default.devices.d2.telemetry"


def test_an_mqtt_subscription_violation() -> None:
    r = parse_refusal(MQTT_SUBSCRIBE)
    assert r is not None
    assert (r.kind, r.connection, r.subject) == (
        SecurityKind.SUBSCRIBE_DENIED,
        10,
        "fogline.default.devices.d2.>",
    )


@pytest.mark.parametrize(("line", "mqtt"), [(MQTT_LOGIN, True), (NATS_LOGIN, False)])
def test_failed_logins_name_the_user_and_address(line: str, mqtt: bool) -> None:
    r = parse_refusal(line)
    assert r is not None
    assert (r.kind, r.user, r.subject, r.mqtt) == (
        SecurityKind.LOGIN_FAILED,
        "default.d1",
        None,
        mqtt,
    )
    assert r.address.startswith("127.0.0.1:")


@pytest.mark.parametrize(
    ("line", "kind"),
    [(NATS_PUBLISH, SecurityKind.PUBLISH_DENIED), (NATS_SUBSCRIBE, SecurityKind.SUBSCRIBE_DENIED)],
)
def test_nats_violations_name_the_user(line: str, kind: SecurityKind) -> None:
    r = parse_refusal(line)
    assert r is not None
    assert (r.kind, r.user, r.connection, r.mqtt) == (kind, "default.d1", 9, False)


def test_other_lines_are_not_refusals() -> None:
    assert parse_refusal(MQTT_LOGIN_FOLLOW_UP) is None
    assert parse_refusal("[1] 2026/12/02 00:52:01.339612 [INF] Server is ready") is None
    assert parse_refusal("[1] 2026/12/02 00:52:01 [ERR] JetStream: failed to store a msg") is None


def test_a_client_id_cannot_forge_a_user_or_end_its_quote_early() -> None:
    # nats-server writes a client id with Go's %q: its quotes come escaped.
    forged = (
        '[1] 2026/12/02 00:52:03.354629 [ERR] 127.0.0.1:1 - mid:7 - "x\\" - \\"tenant_a/user:'
        'a.victim" - Publish Violation - Subject "fogline.a.devices.victim.telemetry"'
    )
    r = parse_refusal(forged)
    assert r is not None and r.user is None and r.connection == 7


def test_user_names_map_to_tenant_and_device_only_when_both_are_slugs() -> None:
    assert tenant_and_device("default.d1") == ("default", "d1")
    assert tenant_and_device("nosuch") == (NO_TENANT, None)
    assert tenant_and_device("a.b.c") == (NO_TENANT, None)
    assert tenant_and_device("A*.>") == (NO_TENANT, None)
