"""The framework floor: a plain FastAPI app, no middleware, that answers
GET /fhir/ServiceRequest/{id} with fixed bytes (one stored ServiceRequest, as read from the
server). Run with the server's uvicorn flags:

    BENCH_FLOOR_BODY=sr.json .venv/bin/python bench/floor_app.py --port N
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from starlette.responses import Response

BODY = Path(os.environ.get("BENCH_FLOOR_BODY", Path(__file__).parent / "data" /
                           "servicerequest.json")).read_bytes()

app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@app.get("/fhir/ServiceRequest/{id}")
async def read(id: str) -> Response:
    return Response(BODY, media_type="application/fhir+json")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    # the same flags as server/cli.py
    uvicorn.run(app, host=args.host, port=args.port, workers=1, access_log=False,
                log_config=None, loop="uvloop", http="httptools", server_header=False,
                proxy_headers=False)
