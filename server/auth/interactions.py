"""The interactions a principal is allowed or refused: one vocabulary for every check.

The codes are FHIR R4's own (CapabilityStatement ``TypeRestfulInteraction`` and
``SystemRestfulInteraction``), so a SMART scope maps onto them without translation
(``r``: read, vread, history-instance; ``s``: search-type, history-type, search-system,
history-system; ``c``: create; ``u``: update, patch; ``d``: delete). What a request reads
on the side counts as the interaction it is: an ``_include``d resource is a ``read``, a
conditional interaction's match a ``search-type``, a compartment search and ``$everything``
a ``search-type`` of each type they return.
"""

from __future__ import annotations

from enum import StrEnum


class Interaction(StrEnum):
    READ = "read"
    VREAD = "vread"
    UPDATE = "update"
    PATCH = "patch"
    DELETE = "delete"
    HISTORY_INSTANCE = "history-instance"
    HISTORY_TYPE = "history-type"
    HISTORY_SYSTEM = "history-system"
    CREATE = "create"
    SEARCH_TYPE = "search-type"
    SEARCH_SYSTEM = "search-system"


WRITES = frozenset({Interaction.CREATE, Interaction.UPDATE, Interaction.PATCH, Interaction.DELETE})
