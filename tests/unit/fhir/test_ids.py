"""Server-assigned ids are valid FHIR ids, RFC 9562 version 7 UUIDs, ordered by creation time."""

import re
import time
import uuid

from server.fhir.ids import new_id

FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def test_ids_are_version_7_uuids_and_valid_fhir_ids() -> None:
    ids = [new_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    for value in ids:
        parsed = uuid.UUID(value)
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert FHIR_ID.match(value)


def test_ids_carry_their_creation_time_and_sort_by_it() -> None:
    before = time.time_ns() // 1_000_000
    first = new_id()
    time.sleep(0.003)
    second = new_id()
    after = time.time_ns() // 1_000_000
    millis = uuid.UUID(first).int >> 80
    assert before <= millis <= after
    assert first < second
