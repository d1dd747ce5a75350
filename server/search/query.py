"""The typed search query: what a parsed search means, independent of any store.

``parse.py`` builds it from a query string; ``store/sql/query.py`` compiles it to SQL and
``match.py`` evaluates it in memory. Both read the same index rows (``index.py``), so a clause
means exactly one thing.

Criteria are an AND of clauses; each clause is one occurrence of a parameter and holds the
OR-alternatives of its comma-separated values. Every value is already normalised the way the
index rows are (``values.py``): strings folded, dates as UTC microsecond ranges, numbers as
floats, references split into type/id or an absolute URL.

Range conventions (``values.py`` produces them, the compiler and the matcher rely on them):

* date: ``[low, high)`` in microseconds since the epoch, UTC; ``high`` is exclusive;
* number and quantity: ``low``/``high`` are the implicit-precision bounds of the search value
  (``100`` -> ``[99.5, 100.5)``) and ``value`` is the number itself; index rows hold
  ``[low, high]`` of the stored value (both equal ``value`` for a plain number; a Range
  contributes its bounds).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal
from urllib.parse import urlencode

Prefix = Literal["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]
PREFIXES: tuple[Prefix, ...] = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")

# index table of each search parameter type (composite and special have none of their own)
TABLES = {
    "string": "search_string",
    "token": "search_token",
    "reference": "search_reference",
    "date": "search_date",
    "number": "search_number",
    "quantity": "search_quantity",
    "uri": "search_uri",
}


def _hashed_once(self: Any) -> int:
    """The hash of a frozen clause, computed once and kept in its ``_hash`` (0 until then): an
    access policy's view is one object for a second of requests, and the statement caches
    keyed by it (``within``, ``_granted``) would otherwise hash its nested tuples at every
    lookup."""
    found: int = self._hash
    if not found:
        found = hash(tuple(getattr(self, f.name) for f in fields(self) if f.compare)) or 1
        object.__setattr__(self, "_hash", found)
    return found


def _state_without_hash(self: Any) -> list[Any]:
    """What a pickled clause carries: its fields with the kept hash cleared, since string
    hashes differ from one process to another (a clause sent to another process computes
    its own)."""
    return [0 if f.name == "_hash" else getattr(self, f.name) for f in fields(self)]


@dataclass(frozen=True, slots=True)
class IdClause:
    """``_id=a,b``: the resource id is one of these."""

    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LastUpdatedClause:
    """``_lastUpdated``: compared against the version's stamp (a column, not an index row)."""

    values: tuple[tuple[Prefix, int, int], ...]  # (prefix, low, high) in µs, high exclusive


@dataclass(frozen=True, slots=True)
class StringClause:
    """``search_string`` rows of ``param``.

    ``start`` (default): folded value starts with the folded search text; ``contains``: folded
    value contains it; ``exact``: the unfolded stored text equals the search text exactly.
    Values are folded for ``start``/``contains`` and raw for ``exact``. Token ``:text``
    searches are string clauses on ``<code>:text`` rows.
    """

    param: str
    mode: Literal["start", "contains", "exact"]
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TokenClause:
    """``search_token`` rows of ``param``; each value is ``(system, code)``.

    ``system`` None = any system, ``""`` = no system; ``code`` None = any code in the system.
    ``negate`` (``:not``): the resource has no row matching any value (resources without a
    value match too). ``:of-type`` is a token clause on ``<code>:of-type`` rows whose code is
    ``type-system|type-code|value``; ``:identifier`` on a reference parameter is a token clause
    on ``<code>:identifier`` rows; ``:in``/``:not-in``/``:above``/``:below`` are expanded to the
    codes they stand for (``:not-in`` with ``negate``).
    """

    param: str
    values: tuple[tuple[str | None, str | None], ...]
    negate: bool = False


@dataclass(frozen=True, slots=True)
class ReferenceValue:
    """A local target (``type`` may be None: any type with that id) or an absolute ``url``
    (a reference outside this server's base, or a canonical URL without ``|version``)."""

    type: str | None = None
    id: str | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class ReferenceClause:
    """``search_reference`` rows of ``param`` pointing at one of ``values``."""

    param: str
    values: tuple[ReferenceValue, ...]


@dataclass(frozen=True, slots=True)
class DateClause:
    """``search_date`` rows of ``param`` compared with ``(prefix, low, high)`` alternatives.

    With stored ``[rlow, rhigh)`` and search ``[low, high)`` (R4 search.html "date"):
    eq: ``rlow >= low and rhigh <= high``; ne: no stored value is eq (and one exists);
    gt: ``rhigh > high``; lt: ``rlow < low``; ge: gt or eq; le: lt or eq;
    sa: ``rlow >= high``; eb: ``rhigh <= low``; ap: the stored range overlaps
    ``[low, high)`` (``rlow < high and rhigh > low``): the parser has already widened an
    ``ap`` value by ``values.ap_margin`` on both sides, so stores never widen it again.
    """

    param: str
    values: tuple[tuple[Prefix, int, int], ...]


@dataclass(frozen=True, slots=True)
class NumberValue:
    """A number search value: the prefix, the number, and its implicit precision range."""

    prefix: Prefix
    value: float
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class NumberClause:
    """``search_number`` rows ``[rlow, rhigh]`` of ``param``.

    eq: ``rlow >= low and rhigh < high``; ne: no stored value is eq (and one exists);
    gt/sa: ``rhigh > value``; lt/eb: ``rlow < value``; ge: ``rhigh >= value``;
    le: ``rlow <= value``; ap: overlaps ``[value - 10 %, value + 10 %]``.
    """

    param: str
    values: tuple[NumberValue, ...]


@dataclass(frozen=True, slots=True)
class QuantityValue:
    """A quantity search value: a number plus optional ``system`` and ``code``.

    With ``system`` None, ``code`` matches a row's code or its unit text (``5||mg``).
    """

    number: NumberValue
    system: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class QuantityClause:
    """``search_quantity`` rows of ``param``; numbers compare as in ``NumberClause``."""

    param: str
    values: tuple[QuantityValue, ...]


@dataclass(frozen=True, slots=True)
class UriClause:
    """``search_uri`` rows of ``param``: ``eq`` exact; ``below``: the stored URI starts with
    the value; ``above``: the stored URI is the value or one of its ``/``-separated prefixes."""

    param: str
    mode: Literal["eq", "below", "above"]
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MissingClause:
    """``:missing``: whether the resource has any row of ``param`` in ``table``."""

    param: str
    table: str
    missing: bool


@dataclass(frozen=True, slots=True)
class ChainClause:
    """``param:Type.rest=value``: some ``search_reference`` row of ``param`` points at a live
    resource of one of ``target_types`` that satisfies ``clause`` (which may chain again)."""

    param: str
    target_types: tuple[str, ...]
    clause: Clause


@dataclass(frozen=True, slots=True)
class HasClause:
    """``_has:Source:param:rest=value``: some live resource of ``source_type`` has a
    ``search_reference`` row of ``param`` pointing at this resource and satisfies ``clause``."""

    source_type: str
    param: str
    clause: Clause


@dataclass(frozen=True, slots=True)
class CompositeClause:
    """A composite parameter; each alternative is a tuple of component clauses that must all
    hold on rows of one group (the rows of component ``i`` are stored under ``<code>#<i>``
    with a shared ``grp`` number per composite root)."""

    param: str
    values: tuple[tuple[Clause, ...], ...]


@dataclass(frozen=True, slots=True)
class CompartmentClause:
    """Membership of a compartment (``Patient/123/Task``, ``$everything``): some
    ``search_reference`` row of the resource, under one of the parameters listed for its type in
    ``params``, points at ``target_type/target_id``; with ``include_self``, the compartment's
    own resource belongs too."""

    target_type: str
    target_id: str
    params: tuple[tuple[str, tuple[str, ...]], ...]  # (resource type, parameter codes)
    include_self: bool = False


@dataclass(frozen=True, slots=True)
class PerTypeClause:
    """``clause`` applies to resources of ``type`` only; resources of other types pass (used by
    system-level searches whose filter exists on some types only, e.g. ``$everything`` dates)."""

    type: str
    clause: Clause


@dataclass(frozen=True, slots=True)
class AnyClause:
    """Some of ``alternatives`` holds (an access policy's view made of several parts; no
    search parameter parses to it)."""

    alternatives: tuple[Clause, ...]
    _hash: int = field(default=0, init=False, repr=False, compare=False)
    __hash__ = _hashed_once
    __getstate__ = _state_without_hash


@dataclass(frozen=True, slots=True)
class AllClause:
    """Every one of ``clauses`` holds (a chain's or ``_has``'s inner clause narrowed by an
    access policy)."""

    clauses: tuple[Clause, ...]
    _hash: int = field(default=0, init=False, repr=False, compare=False)
    __hash__ = _hashed_once
    __getstate__ = _state_without_hash


@dataclass(frozen=True, slots=True)
class TypeClause:
    """The resource is of one of ``types`` (an access policy's per-type part of a view that
    spans types, inside ``AnyClause``/``AllClause``)."""

    types: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReferencedClause:
    """The resource is of one of ``types`` and some live resource that satisfies ``clause``
    has a ``search_reference`` row (under any parameter) pointing at it: the resources a
    view's members refer to (an access policy's Practitioners and Organizations of a
    patient's compartment)."""

    clause: Clause
    types: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GrantClause:
    """The resource is reached by a live care relationship of ``organization`` (rows of the
    ``access_grant`` table, ``server/auth/grants.py``): it belongs, under one of its type's
    compartment parameters (``reach``: type, Patient compartment parameter codes, the
    relationship kinds whose data classes include the type), to a member with whom the
    organisation holds a relationship of one of those kinds — the member's own Patient with
    ``include_self`` kinds — or a row of one of ``scoped`` kinds names the resource itself.
    A row is live when ``now`` (µs, the statement's time) is within its period, its end
    extended by the kind's ``grace`` (µs). With ``consent``, the member's release of
    information holds too (ROI rows of the same table): no live deny of the organisation or of
    everyone, and either the organisation is a covered entity (its Organization's ``type``
    has one of the ``covered`` codes) or a live permit names it or everyone; a resource with
    one of the ``sensitive`` labels (``system|code``) needs a live Part 2 permit naming the
    organisation. With ``emergency`` (break the glass, ``auth/emergency.py``) no grant row is
    needed: the resource belongs, under one of ``reach``'s parameters, to any member (or is a
    member's Patient, with ``include_self``), the member's release of information still
    holding. An access policy's clause; no search parameter parses to it."""

    organization: str
    reach: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]
    include_self: tuple[str, ...]
    scoped: tuple[str, ...]
    grace: tuple[tuple[str, int], ...]
    now: int
    consent: bool = False
    covered: tuple[tuple[str, str], ...] = ()
    sensitive: tuple[str, ...] = ()
    emergency: bool = False
    _hash: int = field(default=0, init=False, repr=False, compare=False)
    __hash__ = _hashed_once
    __getstate__ = _state_without_hash


@dataclass(frozen=True, slots=True)
class OwnerClause:
    """The resource belongs to Patient ``patient``'s compartment by its access facts: the
    ``owners`` written with every version at index time (a reference under one of its type's
    Patient compartment parameters, R4 CompartmentDefinition ``patient``, or the Patient
    itself). The same resources as the full Patient ``CompartmentClause`` of that patient, but
    decided on one column of the resource row instead of its reference rows (an access
    policy's view of a patient; versions stored before their facts existed satisfy it only
    after ``calaim-fhir reindex``)."""

    patient: str


@dataclass(frozen=True, slots=True)
class LabelClause:
    """The version carries the security label ``system|code`` by its access facts (the
    ``labels`` written with every version from its ``meta.security``; a deletion keeps those
    of the version it deletes): ``_security`` decided on one column of the version's own row,
    so it holds for a deletion and for an older version by what that version carried."""

    system: str
    code: str


Clause = (
    IdClause
    | LastUpdatedClause
    | StringClause
    | TokenClause
    | ReferenceClause
    | DateClause
    | NumberClause
    | QuantityClause
    | UriClause
    | MissingClause
    | ChainClause
    | HasClause
    | CompositeClause
    | CompartmentClause
    | PerTypeClause
    | AnyClause
    | AllClause
    | TypeClause
    | ReferencedClause
    | GrantClause
    | OwnerClause
    | LabelClause
)


@dataclass(frozen=True, slots=True)
class Criteria:
    """Search criteria in normal form: a type, its sorted (name, value) pairs and their meaning.

    ``type`` None is a system search (``types`` then limits it, from ``_type``; empty = every
    type). The normal form ``key`` is also the lock name of conditional interactions, so two
    requests that mean the same search serialise against each other.
    """

    type: str | None
    params: tuple[tuple[str, str], ...]
    clauses: tuple[Clause, ...]
    types: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.type or ''}?{urlencode(self.params)}"


@dataclass(frozen=True, slots=True)
class SortKey:
    """One ``_sort`` key: a parameter (``_id``, ``_lastUpdated`` or one with an index table)."""

    param: str
    table: str | None  # None for _id and _lastUpdated
    descending: bool


@dataclass(frozen=True, slots=True)
class Include:
    """``_include=Source:param[:Target]`` or ``_revinclude=...`` (``param`` "*" = every
    reference parameter of ``source_type``); ``iterate`` for ``:iterate``."""

    source_type: str
    param: str
    target_type: str | None
    iterate: bool
    reverse: bool


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page starts: after (or, ``backward``, before) the row with these sort values
    and ``created_seq``. Encoded opaquely into ``_cursor`` by ``parse.py``."""

    values: tuple[str | int | float | None, ...]
    seq: int
    backward: bool = False


Total = Literal["none", "estimate", "accurate", "auto", "bounded"]
"""How a page counts its matches (``Bundle.total``): ``none``; ``accurate``, every match;
``estimate``, the database's estimate where it keeps statistics, else exact; ``auto`` (a search
without ``_total``, by default): exact when counting is cheap (a clause or the types hold fewer
than a probe's bound), else the estimate where the store keeps one, else no total;
``bounded``: exact when counting is cheap, else no total (``auto`` for a caller who may not
see every row, whom an estimate would describe rows it cannot see)."""


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """Everything a store needs to answer one search page."""

    criteria: Criteria
    count: int
    sort: tuple[SortKey, ...] = ()
    cursor: Cursor | None = None
    total: Total = "none"
    max_bytes: int | None = None  # the page ends early past this many bytes (store ``fitting``)
