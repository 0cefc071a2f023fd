"""What every command shares: settings and logging, the database, and errors as messages."""

from __future__ import annotations

import logging

import typer

from app.config import Settings, get_settings

# Errors that are the user's to fix (a bad path or spec, an un-migrated database, a
# model that needs a download): print the message, not a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (FileNotFoundError, ValueError, RuntimeError, LookupError)


def fail(error: BaseException) -> typer.Exit:
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(2)


def setup() -> Settings:
    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings


def session_factory(settings: Settings):
    """A session factory on a database at the schema this code expects (else a message to upgrade)."""
    from app.db.session import ensure_schema_current, make_engine, make_session_factory

    engine = make_engine(settings.resolved_database_url)
    ensure_schema_current(engine)
    return make_session_factory(engine)
