"""`serverctl`: run the control plane and manage it from a shell."""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from serverctl.config import Settings
from serverctl.db.migrate import upgrade
from serverctl.domain.principal import Principal
from serverctl.errors import ServerCTLError
from serverctl.state import AppState

app = typer.Typer(
    help="ServerCTL: the control plane for HAProxy server pools.",
    no_args_is_help=True,
    add_completion=False,
)
users_app = typer.Typer(help="Operator accounts.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens for the REST API.", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")

console = Console()
err = Console(stderr=True)
CLI = Principal(kind="cli", name="local", role="admin")

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="SERVERCTL_DATA_DIR",
        help="Data directory (SQLite database, keys, local backups). Default ./var",
    ),
]


def _settings(data_dir: Path | None, **overrides: object) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    return Settings(**values)  # type: ignore[arg-type]


def _migrated_state(settings: Settings) -> AppState:
    state = AppState.build(settings)
    with console.status("Applying database migrations…"):
        upgrade(state.db.engine)
    return state


def _fail(exc: ServerCTLError) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc.message}")
    return typer.Exit(1)


@app.command()
def serve(
    data_dir: DataDir = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on (127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (8080).")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate chain for HTTPS.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key for HTTPS.")] = None,
) -> None:
    """Migrate the database and run the control plane."""
    import uvicorn

    from serverctl.app import create_app
    from serverctl.http_protocol import CoalescingHttpToolsProtocol

    settings = _settings(data_dir, host=host, port=port, tls_cert=tls_cert, tls_key=tls_key)
    if (settings.tls_cert is None) != (settings.tls_key is None):
        err.print("[red]error:[/red] give both --tls-cert and --tls-key, or neither")
        raise typer.Exit(2)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    state = _migrated_state(settings)
    password = state.operators.create_first_admin()
    scheme = "https" if settings.uses_tls else "http"
    url = settings.public_url or f"{scheme}://{settings.host}:{settings.port}"
    if password is not None:
        # Printed to the terminal once, never logged: the operator must note it now.
        console.print(
            f"\n[bold]First start:[/bold] created operator [bold]admin[/bold] with password "
            f"[bold green]{password}[/bold green]\nIt is not shown again. Log in at {url}/\n"
        )
    console.print(f"ServerCTL listening on {url} (data: {settings.data_dir.resolve()})")
    application = create_app(settings, state)
    # Full garbage collections stop the event loop while they walk every tracked object: at
    # thousands of heartbeats a second they came every few seconds and took about 0.1-0.3 s.
    # What is built by now (modules, routes, schemas: most of the objects) lives as long as the
    # process, so it is frozen out of them; and they are considered after 100 collections of
    # the middle generation instead of 10 (young garbage is still collected as often).
    gc.collect()
    gc.freeze()
    gc.set_threshold(*gc.get_threshold()[:2], 100)
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        # Forwarding headers are judged by our own trusted-proxy rule, never uvicorn's.
        proxy_headers=False,
        server_header=False,
        log_level="warning",
        # The fast event loop and HTTP parser (uvicorn[standard]) by name, not "auto": a
        # missing one fails at start instead of quietly serving heartbeats slower. The parser's
        # protocol sends each answer in one write (serverctl.http_protocol).
        loop="uvloop",
        http=CoalescingHttpToolsProtocol,
        access_log=False,
    )


@app.command()
def migrate(data_dir: DataDir = None) -> None:
    """Apply the database migrations."""
    _migrated_state(_settings(data_dir))
    console.print("database is up to date")


@users_app.command("create")
def users_create(
    name: str,
    role: Annotated[str, typer.Option(help="admin, operator or viewer")] = "viewer",
    data_dir: DataDir = None,
) -> None:
    """Create an operator account; prints its generated password once."""
    state = _migrated_state(_settings(data_dir))
    try:
        user, password = state.operators.create_user(CLI, name, role)
    except ServerCTLError as exc:
        raise _fail(exc) from None
    console.print(f"created {user['role']} [bold]{user['name']}[/bold]; password (shown once):")
    typer.echo(password)


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Option("--name", help="What the token is for.")],
    role: Annotated[str, typer.Option(help="admin, operator or viewer")] = "admin",
    data_dir: DataDir = None,
) -> None:
    """Create an API token; prints it once, alone on the last line."""
    state = _migrated_state(_settings(data_dir))
    try:
        token, secret = state.operators.create_token(CLI, name, role)
    except ServerCTLError as exc:
        raise _fail(exc) from None
    console.print(f"created {token['role']} API token [bold]{token['name']}[/bold] (shown once):")
    typer.echo(secret)


def main() -> None:
    app()
