"""The ``calaim-fhir`` command: serve, load, validate."""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Annotated

import typer

app = typer.Typer(help="calaim-fhir: FHIR R4 server for Medi-Cal ECM and Community Supports",
                  no_args_is_help=True, add_completion=False)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback
                       for info in socket.getaddrinfo(host, None))
        except OSError:
            return False


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8080,
    database_url: Annotated[str | None, typer.Option(
        help="sqlite:///data/calaim-fhir.db (default) or postgresql://user@host/db",
        envvar="CALAIM_FHIR_DATABASE_URL")] = None,
    base_url: Annotated[str | None, typer.Option(
        help="Absolute base URL written into responses", envvar="CALAIM_FHIR_BASE_URL")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes")] = 1,
    insecure_no_auth: Annotated[bool, typer.Option(
        "--insecure-no-auth", help="Allow a non-loopback address without authentication")] = False,
) -> None:
    """Run the FHIR server (base URL http://HOST:PORT/fhir)."""
    import uvicorn

    if not is_loopback(host) and not insecure_no_auth:
        typer.echo(
            f"Refusing to listen on {host}: the server has no authentication yet. "
            "Use a loopback address, or --insecure-no-auth if you really mean it.", err=True)
        raise typer.Exit(2)
    # workers are separate processes: they read their settings from the environment
    os.environ["CALAIM_FHIR_HOST"] = host
    os.environ["CALAIM_FHIR_PORT"] = str(port)
    os.environ["CALAIM_FHIR_WORKERS"] = str(workers)
    os.environ["CALAIM_FHIR_INSECURE_NO_AUTH"] = "true" if insecure_no_auth else "false"
    if database_url:
        os.environ["CALAIM_FHIR_DATABASE_URL"] = database_url
    if base_url:
        os.environ["CALAIM_FHIR_BASE_URL"] = base_url
    from server.settings import Settings

    settings = Settings()
    typer.echo(f"calaim-fhir: {settings.fhir_base} ({_store_label(settings.database_url)}, "
               f"{workers} worker(s))", err=True)
    uvicorn.run(
        "server.app:create_app", factory=True, host=host, port=port, workers=workers,
        access_log=False, log_config=None, loop="uvloop", http="httptools",
        server_header=False, proxy_headers=False,
    )


def _store_label(url: str) -> str:
    return "PostgreSQL" if url.startswith("postgres") else f"SQLite {url[len('sqlite:///'):]}"


def main() -> None:
    app()
