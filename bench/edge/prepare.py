"""A SQLite store for ``served.py``, made by the code of the checkout first on ``PYTHONPATH``:
the data of ``read_cpu.py`` (p1's Observations readable by the ECM provider under its care
relationship and release of information), the signing key, a client acting for
``Organization/ecm`` (``system/*.rs``) and a token of it valid for two hours.

    PYTHONPATH=<checkout> .venv/bin/python bench/edge/prepare.py --out <dir> --base-url URL
        # writes <dir>/store.db, <dir>/paths.txt, <dir>/token.txt
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from access.ab import bundles, p1_reads  # noqa: E402
from read_cpu import call, ecm_token, running  # noqa: E402

from server.app import create_app  # noqa: E402
from server.settings import Settings  # noqa: E402


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--base-url", required=True)
    args = parser.parse_args()
    db = args.out / "store.db"
    url = f"sqlite:///{db}"
    seeder = create_app(Settings(database_url=url, auth="off", audit_reads="off"))
    async with running(seeder):
        for bundle in bundles("relationships"):
            status, answer = await call(
                seeder,
                "POST",
                "/fhir",
                [(b"content-type", b"application/fhir+json")],
                json.dumps(bundle).encode(),
            )
            assert status == 200, answer[:500]
    on = create_app(Settings(database_url=url, auth="smart", base_url=args.base_url))
    async with running(on):
        token = ecm_token(on, 7200)
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    (args.out / "paths.txt").write_text("\n".join(p1_reads()) + "\n")
    (args.out / "token.txt").write_text(token)


if __name__ == "__main__":
    asyncio.run(main())
