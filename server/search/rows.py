"""Search index rows of one resource: what ``index.py`` extracts and the stores keep.

Each list holds tuples whose first two items are the parameter key and the group number:

* the parameter key is the SearchParameter code, or a derived key: ``<code>:text`` (token
  display text, string rows), ``<code>:of-type`` (identifier type + value, token rows),
  ``<code>:identifier`` (a reference's ``identifier``, token rows), ``<code>#<i>`` (component
  ``i`` of a composite, rows of the component's type);
* the group number is 0, except for composite component rows, where all components taken from
  one composite root share one positive number.

Row layouts (every string is already normalised, see ``values.py``; missing parts are ``""``):

* token: ``(param, grp, system, code)``
* string: ``(param, grp, folded, exact)``
* reference: ``(param, grp, target_type, target_id, url)``: a local target has type and id and
  an empty url; anything else has only ``url``
* date: ``(param, grp, low, high)``: microseconds UTC, ``[low, high)``
* number: ``(param, grp, low, high)``: floats, ``[low, high]``
* quantity: ``(param, grp, system, code, unit, low, high)``
* uri: ``(param, grp, uri)``
"""

from __future__ import annotations

from dataclasses import dataclass, field

TokenRow = tuple[str, int, str, str]
StringRow = tuple[str, int, str, str]
ReferenceRow = tuple[str, int, str, str, str]
DateRow = tuple[str, int, int, int]
NumberRow = tuple[str, int, float, float]
QuantityRow = tuple[str, int, str, str, str, float, float]
UriRow = tuple[str, int, str]


@dataclass(slots=True)
class IndexRows:
    token: list[TokenRow] = field(default_factory=list)
    string: list[StringRow] = field(default_factory=list)
    reference: list[ReferenceRow] = field(default_factory=list)
    date: list[DateRow] = field(default_factory=list)
    number: list[NumberRow] = field(default_factory=list)
    quantity: list[QuantityRow] = field(default_factory=list)
    uri: list[UriRow] = field(default_factory=list)

    def tables(self) -> dict[str, list[tuple[object, ...]]]:
        """``{table name: rows}`` for the tables that have rows."""
        out: dict[str, list[tuple[object, ...]]] = {}
        for name in ("token", "string", "reference", "date", "number", "quantity", "uri"):
            rows: list[tuple[object, ...]] = getattr(self, name)
            if rows:
                out["search_" + name] = rows
        return out

    def count(self) -> int:
        return sum(len(rows) for rows in self.tables().values())
