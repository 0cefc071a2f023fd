"""``crossmodal keys``: create, list and revoke API keys."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.common import USER_ERRORS, fail, session_factory, setup

keys_app = typer.Typer(help="API keys (roles: search, admin).", no_args_is_help=True)


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Option(help="Who or what uses the key.")],
    role: Annotated[str, typer.Option(help="`search` or `admin` (admin may also search).")] = "search",
) -> None:
    """Create a key and print it: it is shown once, and only its hash is stored."""
    from app.api.auth import create_key

    settings = setup()
    try:
        with session_factory(settings)() as session:
            row, key = create_key(session, name, role)
            session.commit()
    except USER_ERRORS as e:
        raise fail(e) from e
    typer.echo(f"created key #{row.id} ({row.role}) for {row.name}; keep it now, it is not shown again:")
    typer.echo(key)


@keys_app.command("list")
def list_() -> None:
    """The keys, without their secrets."""
    from app.api.auth import list_keys

    settings = setup()
    try:
        with session_factory(settings)() as session:
            rows = list_keys(session)
    except USER_ERRORS as e:
        raise fail(e) from e
    typer.echo(f"{'id':>4}  {'prefix':<14}{'role':<8}{'name':<24}{'created':<21}{'last used':<21}revoked")
    for r in rows:
        stamp = lambda t: t.strftime("%Y-%m-%d %H:%M:%S") if t else "-"  # noqa: E731
        typer.echo(
            f"{r.id:>4}  {r.prefix:<14}{r.role:<8}{r.name[:23]:<24}{stamp(r.created_at):<21}"
            f"{stamp(r.last_used_at):<21}{stamp(r.revoked_at)}"
        )


@keys_app.command("revoke")
def revoke(key: Annotated[str, typer.Argument(help="The key's id or prefix.")]) -> None:
    """Revoke a key: every API process refuses it from its next request."""
    from app.api.auth import revoke_key

    settings = setup()
    try:
        with session_factory(settings)() as session:
            row = revoke_key(session, key)
            session.commit()
    except USER_ERRORS as e:
        raise fail(e) from e
    typer.echo(f"revoked key #{row.id} ({row.name})")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
