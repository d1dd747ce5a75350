"""The R4 narrative rules (narrative.html; invariants txt-1 and txt-2 of ``Narrative.div``),
checked as part of base validation.

- **txt-1**: the XHTML holds only the basic formatting elements and attributes of HTML 4.0
  (chapters 7-11 and 15, ``<a>`` with ``name`` or ``href``, images, style attributes), all
  in the XHTML namespace, under one root ``div``: no ``script``, ``style``, ``form``,
  ``iframe``, ``object``; no event-handler attribute (``onclick``...). Beyond the letter of
  txt-1, links and images may not use ``javascript:``, ``vbscript:`` or ``data:`` URLs, and a
  style may not use ``expression(...)`` or ``url(...)`` (active content, or a fetch when the
  narrative is shown).
- **txt-2**: the narrative has some non-whitespace content (text, or an image).

Parsing is safe: expat (the standard library's C parser) with any document type declaration,
entity declaration or processing instruction refused, external entities never resolved and
nothing fetched; only XML's own entities (``&lt;`` ...) and character references work.
"""

from __future__ import annotations

import re
from xml.parsers import expat

XHTML = "http://www.w3.org/1999/xhtml"
_XML = "http://www.w3.org/XML/1998/namespace"

_ELEMENTS = frozenset(
    "a abbr acronym address b bdo big blockquote br caption cite code col colgroup dd del "
    "dfn div dl dt em h1 h2 h3 h4 h5 h6 hr i img ins kbd li map area ol p pre q s samp small "
    "span strong sub sup table tbody td tfoot th thead tr tt u ul var".split()
)
_COMMON = frozenset("id class style title lang dir accesskey tabindex".split())
_TABLE = frozenset(
    "span width align valign char charoff abbr axis headers scope rowspan colspan border "
    "cellpadding cellspacing summary frame rules height".split()
)
_SPECIFIC: dict[str, frozenset[str]] = {
    "a": frozenset("href name hreflang type rel rev shape coords charset".split()),
    "img": frozenset("src alt longdesc height width usemap ismap border align".split()),
    "area": frozenset("href shape coords alt nohref".split()),
    "map": frozenset({"name"}),
    "q": frozenset({"cite"}),
    "blockquote": frozenset({"cite"}),
    "del": frozenset({"cite", "datetime"}),
    "ins": frozenset({"cite", "datetime"}),
    "ol": frozenset({"start", "type"}),
    "ul": frozenset({"type"}),
    "li": frozenset({"value", "type"}),
    "hr": frozenset({"align", "size", "width", "noshade"}),
    "p": frozenset({"align"}),
    "div": frozenset({"align"}),
    "pre": frozenset({"width"}),
    "br": frozenset({"clear"}),
    **{h: frozenset({"align"}) for h in ("h1", "h2", "h3", "h4", "h5", "h6")},
}
_URL_ATTRIBUTES = frozenset({"href", "src", "cite", "longdesc", "usemap"})
_BAD_SCHEMES = ("javascript:", "vbscript:", "data:")
_IGNORED_IN_URL = re.compile(r"[\x00-\x20\x7f]+")  # what browsers skip in a URL's scheme
_BAD_STYLE = re.compile(r"expression\s*\(|url\s*\(|javascript:|behavior\s*:|-moz-binding", re.I)


class _Refused(Exception):
    pass


def _unsafe_url(value: str) -> bool:
    return _IGNORED_IN_URL.sub("", value).lower().startswith(_BAD_SCHEMES)


def narrative_problems(div: str) -> list[str]:
    """What breaks txt-1 or txt-2 in ``div`` (empty when it is a valid narrative)."""
    problems: list[str] = []
    depth = 0
    content = False

    def refuse_declaration(*_: object) -> None:
        raise _Refused("a document type or entity declaration is not allowed")

    def refuse_instruction(*_: object) -> None:
        raise _Refused("a processing instruction is not allowed")

    def start(name: str, attributes: dict[str, str]) -> None:
        nonlocal depth, content
        namespace, _, local = name.rpartition(" ")
        if depth == 0 and (local != "div" or namespace != XHTML):
            problems.append("txt-1: the narrative must be one XHTML div element")
        depth += 1
        if namespace != XHTML:
            problems.append(f"txt-1: element '{local[:40]}' is not in the XHTML namespace")
            return
        if local not in _ELEMENTS:
            problems.append(f"txt-1: element '{local[:40]}' is not allowed in a narrative")
            return
        content = content or local == "img"
        allowed = _SPECIFIC.get(local, frozenset())
        for key, value in attributes.items():
            attr_ns, _, attr = key.rpartition(" ")
            if attr_ns == _XML and attr == "lang":
                continue
            if attr_ns or not (
                attr in _COMMON
                or attr in allowed
                or (
                    attr in _TABLE
                    and local
                    in (
                        "table",
                        "td",
                        "th",
                        "tr",
                        "col",
                        "colgroup",
                        "thead",
                        "tbody",
                        "tfoot",
                        "caption",
                        "img",
                    )
                )
            ):
                problems.append(f"txt-1: attribute '{attr[:40]}' is not allowed on '{local}'")
            elif attr in _URL_ATTRIBUTES and _unsafe_url(value):
                problems.append(
                    f"txt-1: '{local}' {attr} uses a script or data: URL, which is not allowed"
                )
            elif attr == "style" and _BAD_STYLE.search(value):
                problems.append(f"txt-1: the style of '{local}' uses expression(), url() or script")

    def end(name: str) -> None:
        nonlocal depth
        depth -= 1

    def text(data: str) -> None:
        nonlocal content
        content = content or not data.isspace()

    parser = expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = refuse_declaration
    parser.EntityDeclHandler = refuse_declaration
    parser.ExternalEntityRefHandler = lambda *_: 0  # never resolved: an error
    parser.ProcessingInstructionHandler = refuse_instruction
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        parser.Parse(div, True)
    except _Refused as refused:
        return [f"txt-1: {refused}"]
    except expat.ExpatError as exc:
        return [
            f"txt-1: the narrative is not well-formed XHTML ({expat.ErrorString(exc.code)}, "
            f"line {exc.lineno}, column {exc.offset})"
        ]
    if not content:
        problems.append("txt-2: the narrative has no content (only whitespace)")
    return list(dict.fromkeys(problems))[:20]
