"""The write pipeline: every write, whoever makes it, goes through the same stages.

REST interactions (conditional ones included), each entry of a batch or transaction Bundle,
operations that change data and the writes program rules derive all become ``Write`` values
(``write.py``) and run through :class:`~server.writes.pipeline.Pipeline`:

1. **prepare** (outside the writers' lock): static admission rules, base validation,
   conditional criteria parsing and profile validation. The reads profile validation makes
   (reference targets) are recorded with the versions seen (``checks.Seen``); inside the unit
   they are read again, and a changed target makes the unit validate again before it writes.
   A patch is applied and validated against the version read here, and applied again inside
   the unit only when that version has changed.
2. **rules** (inside the unit, ``rules.py``): the program rules registered for the type see
   the principal, the stored previous version, the proposed next one and a system reader of
   the same unit; they allow, refuse (an error with its status and issues), or return derived
   writes, which run through the same stages (validated, ruled, stored) in the same unit.
3. **store**: the unit stores the version, its search index rows and
4. **events**: its outbox event, in the same transaction (``server/store/sql/outbox.py``).

Transaction Bundles (``transaction.py``) prepare every entry outside the lock too:
identities are resolved and references rewritten against a reader, and the result is kept
only if the unit resolves every identity the same way and every target read is unchanged.

Nothing here knows HTTP: the API edge turns requests into ``Write`` values and ``Written``
results into responses. See docs/decisions/0011-write-pipeline.md.
"""
