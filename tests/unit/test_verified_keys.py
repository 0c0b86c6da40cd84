"""The cache of verified API keys: what lets an admin in while the database is away, and what
must never let a revoked or unknown key in."""

from __future__ import annotations

import asyncio

import pytest

from fogline.access.tenants import AccessService, VerifiedKeys
from fogline.domain.access import ApiKey, Role
from fogline.domain.errors import Unauthenticated, Unavailable

SECRET = "fgl_abc_secret"
KEY = ApiKey(id="abc", tenant=None, name="admin", role=Role.ADMIN, created_at=0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Store:
    """A tenant store whose database can be taken away."""

    def __init__(self) -> None:
        self.away = False
        self.revoked = False
        self.calls = 0

    def authenticate(self, presented: str) -> ApiKey:
        self.calls += 1
        if self.away:
            raise Unavailable("the database is unavailable")
        if presented != SECRET:
            raise Unauthenticated("unknown API key")
        if self.revoked:
            raise Unauthenticated("this API key was revoked")
        return KEY

    def revoke_api_key(self, key_id: str, tenant: str | None) -> None:
        self.revoked = True


def service() -> tuple[AccessService, Store, Clock]:
    store, clock = Store(), Clock()
    keys = VerifiedKeys(fresh_s=30, outage_grace_s=600, clock=clock)
    return AccessService(store, keys), store, clock  # type: ignore[arg-type]


def test_a_key_is_kept_by_the_hash_of_its_secret_never_the_secret() -> None:
    access, _store, _clock = service()
    assert asyncio.run(access.authenticate(SECRET)) == KEY
    kept = access.verified._keys
    assert list(kept) == [VerifiedKeys.digest(SECRET)]
    assert SECRET not in repr(kept)


def test_a_fresh_key_spares_the_database_and_an_old_one_asks_it_again() -> None:
    access, store, clock = service()
    asyncio.run(access.authenticate(SECRET))
    asyncio.run(access.authenticate(SECRET))
    assert store.calls == 1
    clock.now += 31
    asyncio.run(access.authenticate(SECRET))
    assert store.calls == 2


def test_during_an_outage_a_key_verified_before_it_passes_and_others_are_unavailable() -> None:
    access, store, clock = service()
    asyncio.run(access.authenticate(SECRET))
    store.away = True
    clock.now += 120  # past fresh, within the outage grace
    assert asyncio.run(access.authenticate(SECRET)) == KEY
    with pytest.raises(Unavailable):
        asyncio.run(access.authenticate("fgl_other_secret"))
    clock.now += 600  # past the grace too
    with pytest.raises(Unavailable):
        asyncio.run(access.authenticate(SECRET))


def test_revocation_drops_the_key_at_once_and_it_never_comes_back() -> None:
    access, _store, _clock = service()
    asyncio.run(access.authenticate(SECRET))
    asyncio.run(access.revoke_api_key("default", "abc"))
    with pytest.raises(Unauthenticated):
        asyncio.run(access.authenticate(SECRET))
    # A check that read the key just before the revocation cannot put it back.
    access.verified.remember(VerifiedKeys.digest(SECRET), KEY)
    assert access.verified.get(VerifiedKeys.digest(SECRET), 30) is None


def test_an_unknown_key_is_never_kept_and_the_oldest_go_when_full() -> None:
    access, _store, _clock = service()
    with pytest.raises(Unauthenticated):
        asyncio.run(access.authenticate("fgl_nope_nope"))
    assert not access.verified._keys
    keys = VerifiedKeys(size=2)
    for name in ("a", "b", "c"):
        keys.remember(name, KEY)
    assert keys.get("a", 30) is None and keys.get("c", 30) == KEY
