"""The ``calaim-fhir`` command: serve, deliver, load, import, reindex, validate, check,
subscriptions, openapi."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Annotated, Any

import typer

from server.loader import DEFAULT_URL

app = typer.Typer(
    help="calaim-fhir: FHIR R4 server for Medi-Cal ECM and Community Supports",
    no_args_is_help=True,
    add_completion=False,
)


DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        help="sqlite:///data/calaim-fhir.db (default) or postgresql://user@host/db",
        envvar="CALAIM_FHIR_DATABASE_URL",
    ),
]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(
                ipaddress.ip_address(info[4][0]).is_loopback
                for info in socket.getaddrinfo(host, None)
            )
        except OSError:
            return False


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8080,
    database_url: DatabaseUrl = None,
    base_url: Annotated[
        str | None,
        typer.Option(
            help="Absolute base URL written into responses", envvar="CALAIM_FHIR_BASE_URL"
        ),
    ] = None,
    workers: Annotated[int, typer.Option(help="Worker processes")] = 1,
    auth: Annotated[
        str | None,
        typer.Option(
            help="smart: SMART backend-services tokens on every request but discovery; "
            "off: none, loopback only (the default on a loopback address)",
            envvar="CALAIM_FHIR_AUTH",
        ),
    ] = None,
    insecure_no_auth: Annotated[
        bool,
        typer.Option(
            "--insecure-no-auth",
            help="Listen on a non-loopback address with authentication off (every request "
            "not from a loopback address is still refused 403)",
        ),
    ] = False,
) -> None:
    """Run the FHIR server (base URL http://HOST:PORT/fhir)."""
    import uvicorn

    if auth not in (None, "smart", "off"):
        typer.echo(f"--auth must be smart or off, not {auth!r}", err=True)
        raise typer.Exit(2)
    loopback = is_loopback(host)
    if auth != "smart" and not loopback and not insecure_no_auth:
        typer.echo(
            f"Refusing to listen on {host} without authentication: use --auth smart "
            "(docs/security.md), a loopback address, or --insecure-no-auth if you really "
            "mean it.",
            err=True,
        )
        raise typer.Exit(2)
    mode = auth or ("off" if loopback or insecure_no_auth else "smart")
    if mode == "smart":
        effective_base = base_url or os.environ.get("CALAIM_FHIR_BASE_URL")
        if not (effective_base or "").startswith("https://") and not (
            loopback and _loopback_base(effective_base)
        ):
            typer.echo(
                "Refusing --auth smart with a non-https base URL: set --base-url "
                "https://... (http only on a loopback address).",
                err=True,
            )
            raise typer.Exit(2)
    # workers are separate processes: they read their settings from the environment
    os.environ["CALAIM_FHIR_HOST"] = host
    os.environ["CALAIM_FHIR_PORT"] = str(port)
    os.environ["CALAIM_FHIR_WORKERS"] = str(workers)
    os.environ["CALAIM_FHIR_INSECURE_NO_AUTH"] = "true" if insecure_no_auth else "false"
    os.environ["CALAIM_FHIR_AUTH"] = mode
    if database_url:
        os.environ["CALAIM_FHIR_DATABASE_URL"] = database_url
    if base_url:
        os.environ["CALAIM_FHIR_BASE_URL"] = base_url
    if mode == "off":
        typer.echo(
            "calaim-fhir: authentication is off (CALAIM_FHIR_AUTH=off): only requests from "
            "loopback addresses are answered; use --auth smart for partners.",
            err=True,
        )
    from server.settings import Settings

    settings = Settings()
    busy = _port_in_use(host, port)
    if busy is not None:
        typer.echo(
            f"calaim-fhir: cannot listen on {host}:{port}: {busy}. Another server (perhaps "
            f"calaim-fhir) is using it: stop it, or choose another port (--port {port + 1}).",
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(
        f"calaim-fhir: starting {settings.fhir_base} ({_store_label(settings.database_url)}, "
        f"{workers} worker(s))",
        err=True,
    )
    ready = (
        f"calaim-fhir: ready at {settings.fhir_base} (CapabilityStatement: "
        f"{settings.fhir_base}/metadata). Load the examples with: calaim-fhir load "
        f"--url {settings.fhir_base} examples/bundles"
    )
    options: dict[str, Any] = {
        "factory": True,
        "host": host,
        "port": port,
        "workers": workers,
        "access_log": False,
        "log_config": None,
        "loop": "uvloop",
        "http": "server.serving:LimitedHttpTools",
        "server_header": False,
        "proxy_headers": False,
    }
    delivery = None
    if settings.subscriptions and settings.subscription_delivery == "process":
        from server.logs import configure
        from server.subscriptions.process import DeliveryProcess

        configure()
        delivery = DeliveryProcess()
        delivery.start()
        _stop_on_signals(delivery)
    try:
        if workers > 1:  # a supervisor of worker processes: each worker starts on its own
            typer.echo(ready, err=True)
            uvicorn.run("server.app:create_app", **options)
            return

        class Server(uvicorn.Server):
            async def startup(self, sockets: list[socket.socket] | None = None) -> None:
                await super().startup(sockets)
                if self.started:
                    typer.echo(ready, err=True)

        server = Server(uvicorn.Config("server.app:create_app", **options))
        server.run()
        if not server.started:  # the application failed to start; uvicorn said why
            raise typer.Exit(3)
    finally:
        if delivery is not None:
            delivery.stop()


def _stop_on_signals(delivery: Any) -> None:
    """Stop the delivery process before a SIGTERM or SIGINT ends this one: uvicorn shuts
    down, then raises the signal it caught again with the handler it found (this one), which
    stops the child and lets the signal do what it did before."""
    import signal

    def stop(sig: int, frame: Any) -> None:
        delivery.stop()
        signal.signal(sig, previous[sig] or signal.SIG_DFL)
        signal.raise_signal(sig)

    previous: dict[int, Any] = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, stop)


def _loopback_base(base: str | None) -> bool:
    """Whether a base URL (None: the listen address) names a loopback host."""
    if base is None:
        return True
    from urllib.parse import urlsplit

    host = urlsplit(base).hostname
    return host is not None and is_loopback(host)


def _port_in_use(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (None when it can), checked as uvicorn binds."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _store_label(url: str) -> str:
    return "PostgreSQL" if url.startswith("postgres") else f"SQLite {url[len('sqlite:///') :]}"


# -- load ------------------------------------------------------------------------------------

_LISTED = 50  # unresolved references listed in full


def _load_auth(
    url: str,
    direct: bool,
    token: str | None,
    client_id: str | None,
    private_key: Path | None,
    key_id: str | None,
    scope: str,
) -> Any:
    """How ``load`` authenticates to a running server (None: it does not)."""
    from server import smart_client

    if direct and (token or client_id):
        typer.echo("--direct loads in-process, without authentication: drop --token "
                   "and --client-id", err=True)
        raise typer.Exit(2)
    if token and client_id:
        typer.echo("Give --token or --client-id, not both", err=True)
        raise typer.Exit(2)
    if token:
        return smart_client.Bearer(token)
    if client_id is None:
        if private_key is not None:
            typer.echo("--private-key needs --client-id", err=True)
            raise typer.Exit(2)
        return None
    if private_key is None:
        typer.echo("--client-id needs --private-key", err=True)
        raise typer.Exit(2)
    try:
        key, kid, algorithm = smart_client.load_private_key(private_key, key_id)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    return smart_client.BackendServices(url, client_id, key, kid, algorithm, scope)


def _bar(console: Any, quiet: bool) -> Any:
    """The progress display of a long command: one line per task (description, bar, n of m,
    time); nothing with ``quiet``."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bar

    return Bar(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
        transient=False,
    )


@app.command()
def load(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Files or folders (searched recursively for *.json and *.ndjson; "
            "*.expected.json sidecars are skipped)",
            exists=True,
        ),
    ],
    url: Annotated[
        str, typer.Option(help="FHIR base URL of a running server", envvar="CALAIM_FHIR_BASE_URL")
    ] = DEFAULT_URL,
    direct: Annotated[
        bool,
        typer.Option(
            "--direct",
            help="Load into the store at --database-url through the in-process "
            "application instead of a running server",
        ),
    ] = False,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="With --direct: sqlite:///data/calaim-fhir.db (default) or postgresql://...",
            envvar="CALAIM_FHIR_DATABASE_URL",
        ),
    ] = None,
    batch_size: Annotated[
        int,
        typer.Option(min=1, help="Entries per batch Bundle for NDJSON and non-transaction Bundles"),
    ] = 100,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar")] = False,
    token: Annotated[
        str | None,
        typer.Option(
            help="An access token for a server with --auth smart (sent as Bearer)",
            envvar="CALAIM_FHIR_ACCESS_TOKEN",
        ),
    ] = None,
    client_id: Annotated[
        str | None,
        typer.Option(
            help="A registered client (calaim-fhir client add): the load gets and renews its "
            "own tokens (SMART backend services) with --private-key",
            envvar="CALAIM_FHIR_CLIENT_ID",
        ),
    ] = None,
    private_key: Annotated[
        Path | None,
        typer.Option(
            help="With --client-id: the client's private key (a JWK with kid, or PEM with "
            "--key-id)",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    key_id: Annotated[
        str | None, typer.Option(help="With a PEM --private-key: the kid of its public key")
    ] = None,
    scope: Annotated[
        str, typer.Option(help="With --client-id: the scopes to ask for")
    ] = "system/*.cruds",
) -> None:
    """Load resources, Bundles and NDJSON files into a server (or, with --direct, a store).

    Against a server with --auth smart, give --token, or --client-id and --private-key (the
    load then signs its own assertions and renews its tokens as they expire).

    A transaction or batch Bundle is posted as it is; other Bundles and NDJSON files become
    batches of PUTs (POST for resources without id); a single resource is PUT (or POSTed).
    NDJSON files (and their lines) load referenced types first. References that name no
    resource after the load are listed. Exits 1 when anything failed.
    """
    from rich.console import Console

    from server import loader

    console = Console(stderr=True)
    auth = _load_auth(url, direct, token, client_id, private_key, key_id, scope)
    try:
        files = loader.discover(paths)
    except FileNotFoundError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    target = "store " + (database_url or "(settings default)") if direct else url
    bar = _bar(console, quiet)
    with bar:
        file_task = bar.add_task("files", total=len(files))
        request_task = bar.add_task("requests", total=None)
        progress = loader.Progress(
            file_done=lambda path: bar.advance(file_task),
            request_done=lambda: bar.advance(request_task),
        )
        try:
            report = loader.load(
                files,
                url=url,
                direct=direct,
                database_url=database_url,
                batch_size=batch_size,
                progress=progress,
                auth=auth,
            )
        except (loader.Unreachable, loader.Unauthenticated) as exc:
            bar.stop()
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from exc
        except Exception as exc:  # noqa: BLE001 - a broken target is reported, not a traceback
            bar.stop()
            console.print(f"[red]Could not load into {target}: {type(exc).__name__}: {exc}[/red]")
            raise typer.Exit(1) from exc
    failures = report.failures
    ok = len(report.outcomes) - len(failures)
    unresolved = report.unresolved
    summary = (
        f"{report.files} file(s), {report.requests} request(s), {ok} entries loaded, "
        f"{len(failures)} failed, {len(unresolved)} unresolved reference(s)"
    )
    if unresolved:
        from rich.table import Table

        listed = Table(title="Unresolved references", show_lines=False)
        for column in ("file", "entry", "reference"):
            listed.add_column(column, overflow="fold")
        for each in unresolved[:_LISTED]:
            listed.add_row(each.file, each.entry, each.reference)
        console.print(listed)
        if len(unresolved) > _LISTED:
            console.print(f"... and {len(unresolved) - _LISTED} more")
    if failures:
        from rich.table import Table

        table = Table(title="Failures", show_lines=False)
        for column in ("file", "entry", "status", "diagnostics"):
            table.add_column(column, overflow="fold")
        for failure in failures:
            status = "-" if failure.status is None else str(failure.status)
            table.add_row(failure.file, failure.entry, status, failure.diagnostics)
        console.print(table)
        console.print(f"[red]{summary}[/red]")
        raise typer.Exit(1)
    if not quiet:
        console.print(summary)


# -- import ----------------------------------------------------------------------------------


@app.command("import")
def import_(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="NDJSON files, or folders searched recursively for *.ndjson", exists=True
        ),
    ],
    database_url: DatabaseUrl = None,
    batch: Annotated[int, typer.Option(min=1, help="Lines per transaction")] = 500,
    state: Annotated[
        Path | None,
        typer.Option(
            help="Where the progress is kept for a resume (default: .calaim-import-<digest>"
            ".json in the current folder); removed when the import finishes"
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar")] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Processes computing the search index rows of the next transactions while one"
            " is stored (default: one per core beyond two, for an import of 4 transactions or"
            " more; 0: none)",
        ),
    ] = None,
) -> None:
    """Import NDJSON (Synthea's bulk output, a $export's files) into the store, in two passes:
    every resource under its own id, then the lines with conditional references, resolved.

    Interrupted, it resumes where it stopped when run again with the same files. Rejected lines
    (with their reasons) and references that name no stored resource are listed at the end.
    Exits 1 when a line was rejected.
    """
    from rich.console import Console
    from rich.table import Table

    from server import loader
    from server.bulk import importer
    from server.settings import Settings

    console = Console(stderr=True)
    try:
        files = [p for p in loader.discover(paths) if p.name.endswith(".ndjson")]
    except FileNotFoundError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    if not files:
        console.print("[red]No NDJSON file found[/red]")
        raise typer.Exit(2)
    settings = Settings(database_url=database_url, auth="off") if database_url else Settings(
        auth="off"
    )
    bar = _bar(console, quiet)
    current: list[Any] = []

    def start(name: str, total: int) -> None:
        current.append(bar.add_task(name, total=total))

    def advance(n: int) -> None:
        bar.advance(current[-1], n)

    with bar:
        report = importer.run(
            files,
            settings,
            batch=batch,
            state_file=state or importer.state_path(files),
            progress=importer.Progress(start, advance),
            workers=workers,
        )
    rate = report.stored / report.seconds if report.seconds else 0.0
    summary = (
        f"{len(files)} file(s), {report.lines} line(s): {report.stored} stored, "
        f"{report.skipped} done before, {len(report.rejected)} rejected, "
        f"{report.unresolved_count} unresolved reference(s); "
        f"{report.seconds:.1f} s, {rate:,.0f} resources/s"
    )
    if report.unresolved:
        listed = Table(title="Unresolved references")
        for column in ("file", "entry", "reference"):
            listed.add_column(column, overflow="fold")
        for each in report.unresolved[:_LISTED]:
            listed.add_row(each.file, each.entry, each.reference)
        console.print(listed)
        if report.unresolved_count > _LISTED:
            console.print(f"... and {report.unresolved_count - _LISTED} more")
    if report.rejected:
        table = Table(title="Rejected lines")
        for column in ("file", "line", "status", "reason"):
            table.add_column(column, overflow="fold")
        for rejected in report.rejected:
            table.add_row(
                rejected.file, str(rejected.line), str(rejected.status), rejected.reason
            )
        console.print(table)
        console.print(f"[red]{summary}[/red]")
        raise typer.Exit(1)
    console.print(summary)


# -- reindex ---------------------------------------------------------------------------------


@app.command()
def reindex(
    database_url: Annotated[
        str | None,
        typer.Option(
            help="sqlite:///data/calaim-fhir.db (default) or postgresql://...",
            envvar="CALAIM_FHIR_DATABASE_URL",
        ),
    ] = None,
    batch: Annotated[int, typer.Option(min=1, help="Resources per transaction")] = 500,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar")] = False,
) -> None:
    """Index the stored resources for new or changed search parameters, fill in the access
    facts of versions stored before the server kept them, and rebuild the care relationships'
    access grants, and label sensitive data anew.

    A SearchParameter added to (or changed in) profiles/searchparameters/ is indexed on every
    write from the next start, but is not searchable until this command has indexed the
    resources stored before it. Versions stored before the access facts existed (security
    labels and compartment owners, read by the per-resource access decision) are hidden from
    restricted principals until this command fills them in. The access grants (who serves
    which member) are rebuilt from the stored Coverage, EpisodeOfCare, CareTeam, Task and
    ServiceRequest resources, and the security labels of sensitive data (42 CFR Part 2) from
    the configured value sets. Batched and resumable; restart the server afterwards.
    """
    from rich.console import Console

    from server.search.service import build_search_service
    from server.settings import Settings
    from server.store.sql import reindex as reindexing
    from server.store.sql.opening import open_store

    console = Console(stderr=True)
    settings = Settings(database_url=database_url) if database_url else Settings()
    search = build_search_service(settings)
    repo = open_store(settings, search)
    registry = search.registry
    try:
        filled = reindexing.fill_facts(repo, batch=batch)
        if filled and not quiet:
            console.print(f"Access facts filled in for {filled} stored version(s).")
        relabelled = reindexing.relabel(repo, batch=batch)
        if relabelled and not quiet:
            console.print(f"Security labels changed on {relabelled} resource(s).")
        granted = reindexing.rebuild_grants(repo, batch=batch)
        if granted and not quiet:
            console.print(f"Access grants rebuilt from {granted} relationship resource(s).")
        pending = sorted(registry.pending)
        if not pending:
            if not quiet:
                console.print("Every search parameter is indexed; nothing to do.")
            return
        if not quiet:
            console.print("Reindexing for: " + ", ".join(pending))
        bar = _bar(console, quiet)
        with bar:
            task = bar.add_task("resources", total=None)
            done = reindexing.reindex(
                repo,
                registry,
                batch=batch,
                progress=lambda n, total: bar.update(task, completed=n, total=total),
            )
        if not quiet:
            console.print(f"{done} resource(s) reindexed; {len(pending)} parameter(s) searchable.")
    finally:
        repo.close()


# -- validate --------------------------------------------------------------------------------


@app.command()
def validate(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Resource, Bundle or NDJSON files, or folders of them (*.expected.json skipped)",
            exists=True,
        ),
    ],
) -> None:
    """Base-validate FHIR JSON files (structure, datatypes, cardinality, required bindings).

    Prints one line per issue: FILE: EXPRESSION: DIAGNOSTICS. Exits 1 when there is an error.
    """
    from server import loader

    found = loader.discover(files)
    errors = 0
    for path in found:
        for issue in loader.validate_file(path):
            errors += issue.is_error
            typer.echo(f"{issue.file}: {issue.severity}: {issue.expression}: {issue.diagnostics}")
    typer.echo(f"{len(found)} file(s) checked, {errors} error(s)", err=True)
    if errors:
        raise typer.Exit(1)


# -- check -----------------------------------------------------------------------------------


@app.command()
def check(
    database_url: DatabaseUrl = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="SQLite quick_check; amcheck without heap checks")
    ] = False,
) -> None:
    """Check the store for damage: the SQLite file's header and identity marker, then
    PRAGMA integrity_check (quick_check with --quick); on PostgreSQL, amcheck on every B-tree
    index where the extension is available. Then every stored resource's narrative against
    the rules writes are held to now (txt-1, txt-2: no active content), which data stored
    before those rules may break. Changes nothing. Exits 1 on damage or such a narrative."""
    from server.errors import FhirError
    from server.settings import Settings
    from server.store.sql.dialect import open_dialect
    from server.store.sql.store_file import StoreRefused

    settings = Settings(database_url=database_url) if database_url else Settings()
    try:
        dialect = open_dialect(settings.database_url, pool_size=1)
    except StoreRefused as exc:
        typer.echo(f"damaged: {exc}", err=True)
        raise typer.Exit(1) from exc
    try:
        problems, notes = dialect.integrity(quick)
        if not problems:
            problems = _stored_narratives(dialect)
    except FhirError as exc:  # the database could not even be read: the driver's reason
        problems, notes = [str(exc.__cause__ or exc)], []
    finally:
        dialect.close()
    for note in notes:
        typer.echo(f"note: {note}", err=True)
    for problem in problems:
        typer.echo(f"damaged: {problem}")
    if problems:
        typer.echo(f"{len(problems)} problem(s) found", err=True)
        raise typer.Exit(1)
    typer.echo("ok", err=True)


def _stored_narratives(dialect: Any) -> list[str]:
    """``Type/id: problem`` for each stored resource (or contained one) whose narrative breaks
    txt-1 or txt-2."""
    import orjson

    from server.fhir.narrative import narrative_problems

    out: list[str] = []
    with dialect.reading() as conn:
        rows = conn.execute("SELECT rtype, id, body FROM resource WHERE body IS NOT NULL")
        for rtype, id, body in rows:
            resource = orjson.loads(bytes(body))
            contained = resource.get("contained") or []
            for where, item in [("", resource)] + [
                (f" contained[{i}]", c) for i, c in enumerate(contained) if isinstance(c, dict)
            ]:
                text = item.get("text")
                if isinstance(text, dict) and isinstance(text.get("div"), str):
                    for problem in narrative_problems(text["div"]):
                        out.append(f"narrative of {rtype}/{id}{where}: {problem}")
    return out


# -- client / key ------------------------------------------------------------------------------

clients = typer.Typer(
    help="SMART clients: backend services and launch apps (docs/security.md)",
    no_args_is_help=True,
)
app.add_typer(clients, name="client")
keys = typer.Typer(help="The server's access-token signing keys", no_args_is_help=True)
app.add_typer(keys, name="key")


def _auth_store(database_url: str | None) -> Any:
    from server.search.service import build_search_service
    from server.settings import Settings
    from server.store.sql.opening import open_store

    settings = Settings(database_url=database_url) if database_url else Settings()
    return open_store(settings, build_search_service(settings))


def _check_granular(client: Any) -> None:
    """Each granular scope's query parses into clauses on its type (what the scope policy
    enforces); ``RegistrationError`` otherwise."""
    from server.auth.clients import RegistrationError
    from server.auth.scope_policy import clauses_of
    from server.auth.scopes import ScopeError
    from server.search.service import build_search_service
    from server.settings import Settings

    context = build_search_service(Settings()).context
    for each in client.scopes:
        try:
            clauses_of(each, context)
        except ScopeError as exc:
            raise RegistrationError(str(exc)) from exc


@clients.command("add")
def client_add(
    name: Annotated[str, typer.Option(help="A name for people (the partner and its system)")],
    scope: Annotated[
        str, typer.Option(help='Scopes it may be granted, space-separated: "system/*.rs"')
    ],
    organization: Annotated[
        str | None,
        typer.Option(help="Organization/ID it acts for (must exist; not with --role admin)"),
    ] = None,
    jwks_url: Annotated[
        str | None, typer.Option(help="Its JWKS URL (https), fetched when it asks for a token")
    ] = None,
    jwks_file: Annotated[
        Path | None, typer.Option(help="Its public JWKS, by value", exists=True, dir_okay=False)
    ] = None,
    role: Annotated[
        str | None, typer.Option(help="admin (an operator's client) or auditor")
    ] = None,
    purpose: Annotated[
        str | None,
        typer.Option(help="Purposes of use, comma-separated (default TREAT,HPAYMT,HOPERAT)"),
    ] = None,
    algorithms: Annotated[
        str | None,
        typer.Option(help="Assertion algorithms, comma-separated (default RS384,ES384; "
                     "RS256, ES256 allowed)"),
    ] = None,
    redirect_uri: Annotated[
        list[str] | None,
        typer.Option(help="A launch app's redirect URI (repeat for several; exact match)"),
    ] = None,
    public: Annotated[
        bool, typer.Option("--public", help="A public launch app (no keys: PKCE only)")
    ] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Register a client (a backend service, or with --redirect-uri a launch app); prints one
    JSON object with its client_id."""
    import orjson

    from server.auth.clients import Client, RegistrationError, new_client

    try:
        jwks = None
        if jwks_file is not None:
            try:
                jwks = orjson.loads(jwks_file.read_bytes())
            except orjson.JSONDecodeError as exc:
                raise RegistrationError(f"{jwks_file} is not JSON") from exc
        row = new_client(
            name=name,
            organization=organization,
            scope=scope,
            jwks=jwks,
            jwks_url=jwks_url,
            role=role,
            purposes=None if purpose is None else [p.strip() for p in purpose.split(",")],
            algorithms=None if algorithms is None else [a.strip() for a in algorithms.split(",")],
            redirect_uris=redirect_uri or (),
            public=public,
        )
        _check_granular(Client.of(row))
    except RegistrationError as exc:
        typer.echo(f"calaim-fhir client add: {exc}", err=True)
        raise typer.Exit(2) from exc
    repo = _auth_store(database_url)
    try:
        if organization is not None:
            with repo.reader() as reader:
                found = reader.read("Organization", organization.split("/", 1)[1])
            if found is None or found.deleted:
                typer.echo(
                    f"calaim-fhir client add: {organization} does not exist: create it first",
                    err=True,
                )
                raise typer.Exit(2)
        repo.auth.add_client(row)
    finally:
        repo.close()
    typer.echo(orjson.dumps(Client.of(row).summary()).decode())


@clients.command("list")
def client_list(database_url: DatabaseUrl = None) -> None:
    """Every registered client, one JSON object a line."""
    import orjson

    from server.auth.clients import Client

    repo = _auth_store(database_url)
    try:
        for row in repo.auth.clients():
            typer.echo(orjson.dumps(Client.of(row).summary()).decode())
    finally:
        repo.close()


@clients.command("revoke")
def client_revoke(client_id: str, database_url: DatabaseUrl = None) -> None:
    """Revoke a client: its tokens stop at their next request, on every worker."""
    repo = _auth_store(database_url)
    try:
        done = repo.auth.revoke(client_id)
    finally:
        repo.close()
    if not done:
        typer.echo(f"calaim-fhir client revoke: no active client {client_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {client_id}", err=True)


# -- user ------------------------------------------------------------------------------------

users = typer.Typer(
    help="The users who sign in to approve SMART launches (docs/security.md)",
    no_args_is_help=True,
)
app.add_typer(users, name="user")


def _password(confirm: bool = True) -> str:
    """The password from standard input: all of it but one final line break (a terminal is
    asked twice, without echo)."""
    import getpass
    import sys

    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if confirm and getpass.getpass("Again: ") != first:
            typer.echo("The passwords differ", err=True)
            raise typer.Exit(2)
        return first
    text = sys.stdin.read()
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text


def _user_fail(command: str, message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"calaim-fhir user {command}: {message}", err=True)
    return typer.Exit(code)


@users.command("add")
def user_add(
    username: Annotated[str, typer.Option(help="The sign-in name (compared in lower case)")],
    practitioner_role: Annotated[
        str,
        typer.Option(help="PractitionerRole/ID (must exist and name its organization): "
                     "whom the user acts for"),
    ],
    database_url: DatabaseUrl = None,
) -> None:
    """Add a user; the password is read from standard input. Prints one JSON object."""
    import orjson

    from server.auth.users import UserError, new_user, reference, summary

    password = _password()
    repo = _auth_store(database_url)
    try:
        try:
            reference(practitioner_role, "PractitionerRole")
            with repo.reader() as reader:
                found = reader.read("PractitionerRole", practitioner_role.split("/", 1)[1])
            if found is None or found.body is None:
                raise UserError(f"{practitioner_role} does not exist: create it first")
            row = new_user(username, password, practitioner_role, orjson.loads(found.body))
        except UserError as exc:
            raise _user_fail("add", str(exc)) from exc
        if not repo.auth.add_user(row):
            raise _user_fail("add", f"the username {row.username!r} is taken")
    finally:
        repo.close()
    typer.echo(orjson.dumps(summary(row)).decode())


def _set_user(command: str, username: str, database_url: str | None, **change: str) -> None:
    from server.auth.users import UserError, username_of

    try:
        name = username_of(username)
    except UserError as exc:
        raise _user_fail(command, str(exc)) from exc
    repo = _auth_store(database_url)
    try:
        done = repo.auth.update_user(name, **change)
    finally:
        repo.close()
    if not done:
        raise _user_fail(command, f"no user {name!r}", 1)
    typer.echo(f"{command}: {name}", err=True)


@users.command("disable")
def user_disable(username: str, database_url: DatabaseUrl = None) -> None:
    """Disable a user: it can no longer sign in."""
    _set_user("disable", username, database_url, status="disabled")


@users.command("enable")
def user_enable(username: str, database_url: DatabaseUrl = None) -> None:
    """Enable a disabled user again."""
    _set_user("enable", username, database_url, status="active")


@users.command("reset-password")
def user_reset_password(username: str, database_url: DatabaseUrl = None) -> None:
    """Set a user's password, read from standard input."""
    from server.auth.users import UserError, check_password, hash_password

    try:
        hashed = hash_password(check_password(_password()))
    except UserError as exc:
        raise _user_fail("reset-password", str(exc)) from exc
    _set_user("reset-password", username, database_url, password_hash=hashed)


@keys.command("rotate")
def key_rotate(database_url: DatabaseUrl = None) -> None:
    """A new access-token signing key; the old ones verify until their tokens expire."""
    from server.auth.keys import SigningKeys

    repo = _auth_store(database_url)
    try:
        kid = SigningKeys(repo.auth).rotate()
    finally:
        repo.close()
    typer.echo(f"new signing key {kid}", err=True)


# -- subscriptions -------------------------------------------------------------------------


@app.command()
def subscriptions(database_url: DatabaseUrl = None) -> None:
    """Every subscription with its state, lag and last error, one JSON object a line; then,
    on standard error, how many outbox events are not matched yet (docs/subscriptions.md)."""
    import orjson

    from server.subscriptions.report import report

    repo = _auth_store(database_url)
    try:
        rows, unmatched = report(repo.subscriptions)
    finally:
        repo.close()
    for row in rows:
        typer.echo(orjson.dumps(row).decode())
    typer.echo(f"{len(rows)} subscriptions; {unmatched} outbox events not matched yet", err=True)


@app.command()
def deliver(
    database_url: DatabaseUrl = None,
    parent: Annotated[
        int | None,
        typer.Option(hidden=True, help="Stop when this process (the server) is gone"),
    ] = None,
) -> None:
    """Match outbox events and deliver subscription notifications, with no HTTP server, at
    lower priority (subscription_delivery_nice), until SIGTERM or Ctrl-C. `serve` starts one
    itself with CALAIM_FHIR_SUBSCRIPTION_DELIVERY=process (docs/subscriptions.md)."""
    import asyncio
    import signal
    from contextlib import suppress

    import uvloop

    from server.app import deliver as deliver_forever
    from server.logs import configure
    from server.settings import Settings
    from server.subscriptions.process import parent_gone

    if database_url:
        os.environ["CALAIM_FHIR_DATABASE_URL"] = database_url
    settings = Settings()
    configure()
    os.nice(settings.subscription_delivery_nice)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        async def orphaned() -> None:
            while parent is not None and not stop.is_set():
                if parent_gone(parent):
                    stop.set()
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)

        watch = asyncio.create_task(orphaned())
        try:
            await deliver_forever(settings, stop)
        finally:
            stop.set()
            await watch

    uvloop.run(main())


# -- openapi ---------------------------------------------------------------------------------


@app.command()
def openapi(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of standard output")
    ] = None,
) -> None:
    """Print (or write) the OpenAPI description of the FHIR API."""
    from server import openapi_export

    text = openapi_export.render()
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")


def main() -> None:
    app()


if __name__ == "__main__":  # the delivery process: python -m server.cli deliver
    main()
