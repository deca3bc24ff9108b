"""The server's security state, apart from threads: API keys and webhook deliveries.

Two small interfaces, kept in the same database as the threads (same connections, queries
written once for SQLite and PostgreSQL) but not part of the `Store` contract: a store
that only runs agents never needs them. `threadline.stores.key_store(store)` and
`delivery_log(store)` give the ones beside a store.

* `KeyStore`: a key's secret is stored only as its sha256 digest; a key is found by that
  digest, listed, and revoked (never deleted, so approvals made with it stay explained).
* `DeliveryLog`: remembers inbound webhook delivery ids; of two racing calls with one id
  exactly one is told it is new. Ids are kept for a day by default; `kept_for(keep)` is the
  same log keeping them longer (`THREADLINE_DELIVERY_RETENTION`).
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from ..errors import ConfigError, StoreError
from .dialect import Plan, PlanRunner, Query, Tx, insert_new, select, select_one, stored_time

__all__ = [
    "FORGET_AFTER",
    "MIN_RETENTION",
    "ApiKey",
    "DeliveryLog",
    "KeyStore",
    "MemoryDeliveryLog",
    "MemoryKeyStore",
    "SQLDeliveryLog",
    "SQLKeyStore",
    "check_retention",
]


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A server API key's public record; its secret is stored only as a sha256 digest.

    Attributes:
        id: public identifier (`key_` + hex), shown in listings and used to revoke.
        name: who holds it; approvals made with the key are recorded as `by=name`.
        scopes: subset of `launch`, `respond`, `read`, `admin`.
    """

    id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None = None


class KeyStore(Protocol):
    """Where API keys live."""

    async def create(self, key: ApiKey, secret_hash: str) -> None:
        """Store a key under the sha256 hex digest of its secret (never the secret).

        Raises StoreError if `key.id` or `secret_hash` already exists.
        """

    async def find(self, secret_hash: str) -> ApiKey | None:
        """The key whose secret hashes to `secret_hash` (revoked ones too), or None."""

    async def list(self) -> Sequence[ApiKey]:
        """Every key, revoked ones included, oldest first."""

    async def revoke(self, key_id: str, *, at: datetime) -> bool:
        """Mark a key revoked at `at`. False if no such key or it was already revoked."""


class DeliveryLog(Protocol):
    """The inbound webhook deliveries already received."""

    async def remember(self, delivery_id: str, *, at: datetime) -> bool:
        """Record a delivery id; False if it was already recorded (a replay).

        Atomic: of two racing calls with one id exactly one returns True. Ids recorded
        longer than the log's retention before `at` may be forgotten: a sender's redelivery
        after that launches again.
        """

    async def forget(self, delivery_id: str) -> None:
        """Drop a recorded delivery id: it was refused, so a retry of it may be applied."""

    def kept_for(self, keep: timedelta) -> DeliveryLog:
        """The same log (same ids), keeping ids for `keep` instead.

        Raises:
            ConfigError: `keep` is shorter than `MIN_RETENTION`.
        """


FORGET_AFTER = timedelta(days=1)
"""How long delivery ids are kept unless configured (`THREADLINE_DELIVERY_RETENTION`)."""

MIN_RETENTION = timedelta(minutes=10)
"""The shortest retention allowed: longer than the five minutes a signed timestamp is
accepted for, so a replayed request cannot outlive the memory of it."""


def check_retention(keep: timedelta) -> timedelta:
    """`keep`, if it is at least `MIN_RETENTION`. Raises ConfigError otherwise."""
    if keep < MIN_RETENTION:
        raise ConfigError(
            f"THREADLINE_DELIVERY_RETENTION must be at least {MIN_RETENTION} (webhook "
            f"signatures are accepted for five minutes), not {keep}"
        )
    return keep


class MemoryKeyStore:
    """API keys in a dict (tests, `memory://`)."""

    def __init__(self) -> None:
        self._keys: dict[str, tuple[ApiKey, str]] = {}
        self._lock = asyncio.Lock()

    async def create(self, key: ApiKey, secret_hash: str) -> None:
        async with self._lock:
            if key.id in self._keys or any(h == secret_hash for _, h in self._keys.values()):
                raise StoreError(f"API key {key.id} already exists")
            self._keys[key.id] = (key, secret_hash)

    async def find(self, secret_hash: str) -> ApiKey | None:
        return next((k for k, h in self._keys.values() if h == secret_hash), None)

    async def list(self) -> Sequence[ApiKey]:
        return sorted((k for k, _ in self._keys.values()), key=lambda k: (k.created_at, k.id))

    async def revoke(self, key_id: str, *, at: datetime) -> bool:
        async with self._lock:
            found = self._keys.get(key_id)
            if found is None or found[0].revoked_at is not None:
                return False
            self._keys[key_id] = (replace(found[0], revoked_at=at), found[1])
            return True


class MemoryDeliveryLog:
    """Delivery ids in a dict (tests, `memory://`)."""

    def __init__(
        self, keep: timedelta = FORGET_AFTER, seen: dict[str, datetime] | None = None
    ) -> None:
        self.keep = check_retention(keep)
        self._seen: dict[str, datetime] = {} if seen is None else seen

    def kept_for(self, keep: timedelta) -> MemoryDeliveryLog:
        return MemoryDeliveryLog(keep, self._seen)

    async def remember(self, delivery_id: str, *, at: datetime) -> bool:
        # No await inside: atomic on the event loop.
        if delivery_id in self._seen:
            return False
        for old in [d for d, t in self._seen.items() if t < at - self.keep]:
            del self._seen[old]
        self._seen[delivery_id] = at
        return True

    async def forget(self, delivery_id: str) -> None:
        self._seen.pop(delivery_id, None)


class SQLKeyStore:
    """API keys in the `api_keys` table of a SQL store's database, on its connections."""

    def __init__(self, store: PlanRunner) -> None:
        self._store = store

    async def create(self, key: ApiKey, secret_hash: str) -> None:
        d = self._store.dialect
        args = {
            "id": key.id,
            "name": key.name,
            "hash": secret_hash,
            "scopes": " ".join(key.scopes),
            "created_at": d.time(key.created_at),
        }
        await insert_new(self._store, _INSERT_KEY, args, f"API key {key.id} already exists")

    async def find(self, secret_hash: str) -> ApiKey | None:
        where = f"{_KEYS} WHERE secret_hash = :hash"
        return await select_one(self._store, where, {"hash": secret_hash}, _api_key)

    async def list(self) -> builtins.list[ApiKey]:
        return await select(self._store, f"{_KEYS} ORDER BY created_at, id", {}, _api_key)

    async def revoke(self, key_id: str, *, at: datetime) -> bool:
        d = self._store.dialect
        args = {"id": key_id, "at": d.time(at)}

        def plan() -> Plan[bool]:
            return (yield Query(d.sql(_REVOKE), args)).rowcount == 1

        return await self._store.run(plan, Tx.WRITE)


class SQLDeliveryLog:
    """Delivery ids in the `webhook_deliveries` table of a SQL store's database."""

    def __init__(self, store: PlanRunner, keep: timedelta = FORGET_AFTER) -> None:
        self._store = store
        self.keep = check_retention(keep)

    def kept_for(self, keep: timedelta) -> SQLDeliveryLog:
        return SQLDeliveryLog(self._store, keep)

    async def remember(self, delivery_id: str, *, at: datetime) -> bool:
        d = self._store.dialect
        args = {"id": delivery_id, "at": d.time(at), "horizon": d.time(at - self.keep)}

        def plan() -> Plan[bool]:
            yield Query(d.sql("DELETE FROM webhook_deliveries WHERE received_at < :horizon"), args)
            return (yield Query(d.sql(_REMEMBER), args)).rowcount == 1

        return await self._store.run(plan, Tx.ATOMIC)

    async def forget(self, delivery_id: str) -> None:
        d = self._store.dialect

        def plan() -> Plan[None]:
            yield Query(d.sql("DELETE FROM webhook_deliveries WHERE id = :id"), {"id": delivery_id})

        await self._store.run(plan, Tx.WRITE)


_KEYS = "SELECT id, name, scopes, created_at, revoked_at FROM api_keys"
_INSERT_KEY = (
    "INSERT INTO api_keys (id, name, secret_hash, scopes, created_at) "
    "VALUES (:id, :name, :hash, :scopes, :created_at)"
)
_REVOKE = "UPDATE api_keys SET revoked_at = :at WHERE id = :id AND revoked_at IS NULL"
_REMEMBER = (
    "INSERT INTO webhook_deliveries (id, received_at) VALUES (:id, :at) ON CONFLICT (id) DO NOTHING"
)


def _api_key(row: Sequence[Any]) -> ApiKey:
    return ApiKey(
        id=row[0],
        name=row[1],
        scopes=tuple(row[2].split()),
        created_at=stored_time(row[3]),
        revoked_at=stored_time(row[4]) if row[4] is not None else None,
    )
