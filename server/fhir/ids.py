"""Server-assigned resource ids: time-ordered UUIDs (version 7, RFC 9562).

The first 48 bits are the creation time in milliseconds, the rest random. Ids created close
together sort close together, so new rows land next to each other in every index keyed on the
id instead of on random pages — on a large store that writes a fraction of the pages a random
(version 4) UUID would, which keeps commits small. Clients must treat ids as opaque; the time
they carry is the same as the resource's first ``meta.lastUpdated``, to the millisecond.
"""

from __future__ import annotations

import os
import time
import uuid

_VERSION = 0x7 << 76
_VARIANT = 0x2 << 62
_CLEAR = ~((0xF << 76) | (0x3 << 62))


def new_id() -> str:
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    return str(uuid.UUID(int=(value & _CLEAR) | _VERSION | _VARIANT))
