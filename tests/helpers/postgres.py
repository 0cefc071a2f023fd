"""The test PostgreSQL server: where it is, and a fresh database on it for one test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

POSTGRES_URL = os.environ.get("CROSSMODAL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@contextmanager
def fresh_postgres_database(admin: Engine) -> Iterator[str]:
    """Create a uniquely named database on the test server; drop it on exit."""
    name = f"crossmodal_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def backend_database(request, tmp: Path) -> AbstractContextManager[str]:
    """The database URL for a fixture parametrised ``"sqlite"`` / ``"postgresql"``: a file in ``tmp``,
    or a fresh database on the test server (dropped when the context ends)."""
    if request.param == "sqlite":
        return nullcontext(f"sqlite:///{tmp / 'db.sqlite'}")
    return fresh_postgres_database(request.getfixturevalue("postgres_admin"))
