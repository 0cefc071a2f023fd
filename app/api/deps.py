"""Dependencies shared by the routes, as ``Annotated`` aliases so signatures stay short.

The trivial ones are ``async``: FastAPI runs a sync dependency in the thread pool,
and three needless thread hops per request showed up in the latency benchmark.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.serving.state import SearchState
from app.values import MAX_DB_ID


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _session_factory(request: Request) -> sessionmaker:
    return request.app.state.session_factory


def _session(request: Request) -> Iterator[Session]:
    with request.app.state.session_factory() as session:
        yield session


async def _search_state(request: Request) -> SearchState:
    return request.app.state.search


SettingsDep = Annotated[Settings, Depends(_settings)]
SessionFactoryDep = Annotated[sessionmaker, Depends(_session_factory)]
SessionDep = Annotated[Session, Depends(_session)]
SearchStateDep = Annotated[SearchState, Depends(_search_state)]

# A larger id is a 422 here, not an overflow in the database driver.
MAX_OFFSET = 2**31
DbId = Annotated[int, Path(ge=1, le=MAX_DB_ID, description="A database id.")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Rows to skip.")]
Limit = Annotated[int, Query(ge=1, le=1000, description="Rows to return.")]
