"""The program rules every server runs on every write (registered by ``server/app.py``)."""

from __future__ import annotations

from server.ecm.referral_lifecycle import ReferralLifecycle
from server.search.service import search_service
from server.settings import Settings
from server.writes.rules import Rule


def program_rules(settings: Settings) -> list[Rule]:
    return [ReferralLifecycle(search_service(settings).context, settings.coordination_platform)]
