"""One version of a model at a time: a second version is refused while one is live, requests
about one model name decide one at a time, a refused or lost update changes nothing (mappings
included), and a restart that finds two versions running keeps one."""

from __future__ import annotations

import asyncio
from typing import Any

from tests import model_kit as k
from tests.conftest import Api, async_wait_for, pid_alive

T = "/tenants/default/models"


async def mappings_of(api: Api, name: str, version: str) -> dict[str, Any]:
    r = await api.http.get(f"{T}/{name}/{version}/mappings")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def events_of(api: Api, name: str, version: str) -> list[str]:
    r = await api.http.get(f"{T}/{name}/{version}/events")
    assert r.status_code == 200, r.text
    return [e["event"] for e in r.json()]


async def map_asset(api: Api, name: str, version: str, asset: str) -> None:
    r = await api.http.put(f"{T}/{name}/{version}/mappings", json={"assets": [asset]})
    assert r.status_code == 200, r.text


async def snapshot(api: Api, name: str, versions: list[str]) -> dict[str, Any]:
    """What a refused request must leave as it was: each version's state, mappings, events."""
    return {
        v: (
            await k.state_of(api, name, v),
            await mappings_of(api, name, v),
            await events_of(api, name, v),
        )
        for v in versions
    }


async def test_a_second_version_is_refused_while_one_is_live(platform: Any, api: Api) -> None:
    await k.sensors(api, "s1", "s2")
    name = await k.submit(api, k.manifest("twin"), {"model.py": k.DOUBLER})
    await k.map_type(api, name)
    assert (await api.http.post(f"{T}/{name}/1.0.0/deploy")).status_code == 202
    await k.wait_state(api, name, "active")
    pid = (await k.deployment(api, name))["runtime"]["pid"]
    await k.submit(api, k.manifest(name, version="2.0.0"), {"model.py": k.DOUBLER})
    await map_asset(api, name, "2.0.0", "s2")  # its own mappings, which must stay its own
    before = await snapshot(api, name, ["1.0.0", "2.0.0"])

    r = await api.http.post(f"{T}/{name}/2.0.0/deploy")
    assert r.status_code == 409, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["title"] == "Conflict"
    assert "1.0.0 is active" in problem["detail"]
    assert f"fogline model update {name} --to 2.0.0" in problem["detail"]
    assert f"fogline model stop {name} 1.0.0" in problem["detail"]
    assert await snapshot(api, name, ["1.0.0", "2.0.0"]) == before  # nothing changed
    assert pid_alive(pid)

    # The way the answer points to works: 2.0.0 takes over, with its own mappings.
    r = await api.http.post(f"{T}/{name}/update", json={"to_version": "2.0.0"})
    assert r.status_code == 202, r.text
    await k.wait_state(api, name, "active", version="2.0.0")
    await k.wait_state(api, name, "stopped", version="1.0.0")
    assert (await mappings_of(api, name, "2.0.0")) == before["2.0.0"][1]

    # A stopped version may not come back beside the active one either; once that one is
    # stopped, it may.
    r = await api.http.post(f"{T}/{name}/1.0.0/deploy")
    assert r.status_code == 409 and "2.0.0 is active" in r.json()["detail"]
    assert await k.state_of(api, name, "1.0.0") == "stopped"
    assert (await api.http.post(f"{T}/{name}/2.0.0/stop")).status_code == 202
    await k.wait_state(api, name, "stopped", version="2.0.0")
    assert (await api.http.post(f"{T}/{name}/1.0.0/deploy")).status_code == 202
    await k.wait_state(api, name, "active")


async def test_concurrent_deploys_of_three_versions_accept_exactly_one(
    platform: Any, api: Api
) -> None:
    await k.sensors(api, "s1")
    name = "racer"
    versions = ["1.0.0", "2.0.0", "3.0.0"]
    for version in versions:
        await k.submit(api, k.manifest(name, version=version), {"model.py": k.DOUBLER})
        await k.map_type(api, name, version)
    answers = await asyncio.gather(*(api.http.post(f"{T}/{name}/{v}/deploy") for v in versions))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [202, 409, 409], [r.text for r in answers]
    [winner] = [v for v, r in zip(versions, answers, strict=True) if r.status_code == 202]
    for version, r in zip(versions, answers, strict=True):
        if version != winner:
            assert f"{winner} is deploying" in r.json()["detail"], r.text
            assert await k.state_of(api, name, version) == "draft"
            assert await events_of(api, name, version) == ["submit"]
    await k.wait_state(api, name, "active", version=winner)


async def test_concurrent_updates_one_wins_and_the_loser_changes_nothing(
    platform: Any, api: Api
) -> None:
    await k.sensors(api, "s1", "s2")
    name = await k.submit(api, k.manifest("contest"), {"model.py": k.DOUBLER})
    await k.map_type(api, name)
    assert (await api.http.post(f"{T}/{name}/1.0.0/deploy")).status_code == 202
    await k.wait_state(api, name, "active")
    # 2.0.0 has no mappings (an update would lend it 1.0.0's), 3.0.0 has its own.
    for version in ("2.0.0", "3.0.0"):
        await k.submit(api, k.manifest(name, version=version), {"model.py": k.DOUBLER})
    await map_asset(api, name, "3.0.0", "s2")
    candidates = ["2.0.0", "3.0.0"]
    before = await snapshot(api, name, candidates)
    inherited = await mappings_of(api, name, "1.0.0")

    answers = await asyncio.gather(
        *(api.http.post(f"{T}/{name}/update", json={"to_version": v}) for v in candidates)
    )
    assert sorted(r.status_code for r in answers) == [202, 409], [r.text for r in answers]
    [(winner, _)] = [
        (v, r) for v, r in zip(candidates, answers, strict=True) if r.status_code == 202
    ]
    [(loser, refused)] = [
        (v, r) for v, r in zip(candidates, answers, strict=True) if r.status_code == 409
    ]
    assert refused.headers["content-type"] == "application/problem+json"
    assert "1.0.0 is updating" in refused.json()["detail"]
    # The loser is exactly as it was: state, mappings (nothing inherited, nothing lost), events.
    assert (await snapshot(api, name, [loser]))[loser] == before[loser]

    await k.wait_state(api, name, "active", version=winner)
    await k.wait_state(api, name, "stopped", version="1.0.0")
    expected = before[winner][1] if winner == "3.0.0" else inherited
    assert await mappings_of(api, name, winner) == expected
    assert (await snapshot(api, name, [loser]))[loser] == before[loser]


async def test_an_update_that_loses_its_old_version_midway_gives_back_the_mappings(
    platform: Any, api: Api
) -> None:
    """The old version leaves `active` between the new one inheriting its mappings and the
    update's move (as when the health monitor gives up on it at that moment): the update is
    refused, and the new version holds no mappings, as before."""
    from fogline.domain.lifecycle import ModelEvent as E

    db, manager = platform.db, platform.deployments
    await k.sensors(api, "s1")
    name = await k.submit(api, k.manifest("fading"), {"model.py": k.DOUBLER})
    await k.map_type(api, name)
    for event in (E.DEPLOY, E.DEPLOYED):  # active as the store says; no process is needed
        db.models.transition("default", name, "1.0.0", event)
    await k.submit(api, k.manifest(name, version="2.0.0"), {"model.py": k.DOUBLER})
    checked = manager._check_deployable

    async def old_one_lost_meanwhile(model: Any) -> None:
        db.models.transition("default", name, "1.0.0", E.UNHEALTHY, "health not recovered")
        await checked(model)

    manager._check_deployable = old_one_lost_meanwhile
    try:
        r = await api.http.post(f"{T}/{name}/update", json={"to_version": "2.0.0"})
    finally:
        manager._check_deployable = checked
    assert r.status_code == 409, r.text
    assert "cannot update" in r.json()["detail"]
    mappings = await mappings_of(api, name, "2.0.0")
    assert (mappings["assets"], mappings["asset_types"], mappings["resolved"]) == ({}, {}, [])
    assert await events_of(api, name, "2.0.0") == ["submit"]
    assert await k.state_of(api, name, "2.0.0") == "draft"


async def test_an_inheritance_is_undone_exactly_and_leaves_a_users_mappings(
    platform: Any, api: Api
) -> None:
    service = platform.deployments.mappings
    await k.sensors(api, "s1", "s2")
    name = await k.submit(api, k.manifest("heir"))
    await k.map_type(api, name)
    for version in ("2.0.0", "3.0.0"):
        await k.submit(api, k.manifest(name, version=version))
    old, bare, own = (
        platform.db.models.get_model("default", name, v) for v in ("1.0.0", "2.0.0", "3.0.0")
    )
    await map_asset(api, name, "3.0.0", "s2")
    mine = await mappings_of(api, name, "3.0.0")

    kept = await service.inherit(old, own)  # it has its own: nothing taken, nothing to undo
    assert not kept.changed
    await service.undo(kept)
    assert await mappings_of(api, name, "3.0.0") == mine

    lent = await service.inherit(old, bare)
    assert lent.changed
    assert await mappings_of(api, name, "2.0.0") == await mappings_of(api, name, "1.0.0")
    await service.undo(lent)
    empty = await mappings_of(api, name, "2.0.0")
    assert (empty["assets"], empty["asset_types"], empty["resolved"]) == ({}, {}, [])

    # Mappings a user put in the meantime are theirs: the undo leaves them.
    lent = await service.inherit(old, bare)
    await map_asset(api, name, "2.0.0", "s1")
    theirs = await mappings_of(api, name, "2.0.0")
    await service.undo(lent)
    assert await mappings_of(api, name, "2.0.0") == theirs


async def test_a_restart_that_finds_two_versions_running_keeps_one(platform: Any, api: Api) -> None:
    """What an older Fogline left: two active versions of one name, and an active version with
    a second one half deployed beside it (written here as it would have)."""
    from fogline.domain.lifecycle import ModelEvent as E

    db = platform.db
    await k.sensors(api, "s1", "s2")
    plan = {
        ("doubles", "1.0.0"): [E.DEPLOY, E.DEPLOYED],
        ("doubles", "2.0.0"): [E.DEPLOY, E.DEPLOYED],  # made active last: kept
        ("halfway", "1.0.0"): [E.DEPLOY, E.DEPLOYED],  # active: kept over a deploying one
        ("halfway", "2.0.0"): [E.DEPLOY],
    }
    for (name, version), events in plan.items():
        await k.submit(api, k.manifest(name, version=version), {"model.py": k.DOUBLER})
        await map_asset(api, name, version, "s1" if name == "doubles" else "s2")
        for event in events:
            db.models.transition("default", name, version, event)
    await platform.deployments.recover()

    await k.wait_state(api, "doubles", "stopped", version="1.0.0")
    await k.wait_state(api, "halfway", "draft", version="2.0.0")
    for name, version in (("doubles", "1.0.0"), ("halfway", "2.0.0")):
        model = (await api.http.get(f"{T}/{name}/{version}")).json()
        assert "one version of a model runs at a time" in model["state_reason"]
    assert "2.0.0 is active" in (await api.http.get(f"{T}/doubles/1.0.0")).json()["state_reason"]
    assert (await events_of(api, "doubles", "1.0.0"))[-2:] == ["stop", "stopped"]
    assert (await events_of(api, "halfway", "2.0.0"))[-1] == "deploy-failed"

    async def restored(name: str, version: str) -> bool:
        status = await k.deployment(api, name, version)
        saga = status["saga"] or {}
        return saga.get("name") == "restore" and saga.get("status") == "done"

    for name, version in (("doubles", "2.0.0"), ("halfway", "1.0.0")):
        await async_wait_for(lambda n=name, v=version: restored(n, v), 60, f"{name} {version}")
        assert await k.state_of(api, name, version) == "active"
        assert pid_alive((await k.deployment(api, name, version))["runtime"]["pid"])
