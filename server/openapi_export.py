"""Writes the OpenAPI description of the FHIR API (``server/openapi_document.py``) to the
committed ``openapi/openapi.json``: the same bytes the server serves at ``/openapi.json``.
Builds an application in process to read its routes, so this is a composition root, like
``server/app.py`` and ``server/cli.py``. ``scripts/export-openapi`` runs it;
``tests/conformance/test_openapi.py`` fails when the committed file drifts.

    python -m server.openapi_export [PATH]   # default: openapi/openapi.json
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from server import openapi_document
from server.app import openapi_routes
from server.operations.registry import Operations
from server.services import default_operations

DEFAULT_PATH = Path("openapi") / "openapi.json"


def export(operations: Operations | None = None) -> dict[str, Any]:
    """The post-processed OpenAPI document of the application (``operations``: default, the
    server's own, from the package's OperationDefinitions)."""
    table = default_operations() if operations is None else operations
    return openapi_document.document_of(openapi_routes(), table)


def render(document: dict[str, Any] | None = None) -> str:
    """The document as committed: sorted keys, two-space indent, trailing newline."""
    return openapi_document.render(export() if document is None else document)


def write(path: Path = DEFAULT_PATH) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    target = write(Path(args[0]) if args else DEFAULT_PATH)
    print(f"wrote {target}", file=sys.stderr)


if __name__ == "__main__":
    main()
