"""The server's access-token signing keys: RSA (RS256), kept in the database, rotatable.

Every worker loads the keys from the database (``auth_signing_key``); the newest key that is
not retired signs. ``rotate`` adds a new key and retires the others: a retired key still
verifies (and stays in the published JWKS) until every token it signed has expired, then
``rotate`` drops it. A worker reloads the keys at most every ``RELOAD_SECONDS`` to pick up a
rotation made elsewhere, and at once when a token names a key id it does not know that the
database has (a key another worker or ``calaim-fhir key rotate`` added since). Workers
starting together on an empty database create one first key between them.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from joserfc.jwk import RSAKey

from server.store.base import Auth

ALGORITHM = "RS256"
KEY_BITS = 2048
RELOAD_SECONDS = 60.0


class SigningKeys:
    def __init__(
        self,
        store: Auth,
        *,
        token_lifetime: int = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._lifetime = token_lifetime
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, RSAKey] = {}
        self._current: RSAKey | None = None
        self._loaded = float("-inf")

    def ensure(self) -> None:
        """Create the first key if the database has none that signs (at start-up)."""
        rows = self._store.keys()
        if not any(retired is None for _, _, _, retired in rows):
            self._store.add_first_key(*self._generate())
        self.reload()

    def _generate(self) -> tuple[str, str, int]:
        """A new key: (kid, private JWK, created in microseconds)."""
        kid = uuid.uuid4().hex
        key = RSAKey.generate_key(KEY_BITS, private=True, parameters={"kid": kid})
        return kid, orjson.dumps(key.as_dict(private=True)).decode(), int(self._clock() * 1e6)

    def _add(self) -> str:
        kid, jwk, created = self._generate()
        self._store.add_key(kid, jwk, created)
        return kid

    def rotate(self) -> str:
        """A new signing key; the others are retired (and dropped once their tokens expired).
        Returns the new key id."""
        kid = self._add()
        now_us = int(self._clock() * 1e6)
        self._store.retire_keys(kid, now_us)
        self._store.drop_keys(now_us - (self._lifetime + 120) * 1_000_000)
        self.reload()
        return kid

    def reload(self) -> None:
        rows = self._store.keys()
        keys = {kid: RSAKey.import_key(orjson.loads(jwk)) for kid, jwk, _, _ in rows}
        current = next((keys[kid] for kid, _, _, retired in rows if retired is None), None)
        with self._lock:
            self._keys, self._current = keys, current
            self._loaded = self._clock()

    def current(self) -> RSAKey:
        if self._clock() - self._loaded > RELOAD_SECONDS or self._current is None:
            self.reload()
        if self._current is None:  # pragma: no cover - ensure() ran at start-up
            raise RuntimeError("no signing key")
        return self._current

    def key(self, kid: str) -> RSAKey | None:
        """The key ``kid`` (for verification): cached; an id not cached is looked up in the
        database (one indexed read), and the keys reloaded when it is there."""
        found = self._keys.get(kid)
        if found is None and kid and self._store.has_key(kid):
            self.reload()
            found = self._keys.get(kid)
        return found

    def jwks(self) -> dict[str, Any]:
        """The public keys, as the JWKS the server publishes."""
        if self._clock() - self._loaded > RELOAD_SECONDS:
            self.reload()
        return {
            "keys": [
                {**key.as_dict(private=False), "use": "sig", "alg": ALGORITHM}
                for key in self._keys.values()
            ]
        }
