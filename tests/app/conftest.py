"""A small ingested service per backend (``test:tiny`` over 40 synthetic pairs), shared by a module."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import nullcontext

import pytest
from fastapi.testclient import TestClient

from app.db.session import make_engine, make_session_factory, upgrade
from app.main import create_app
from app.pipelines.ingest import ingest
from tests.helpers.browser import ARGS, CHROMIUM
from tests.helpers.postgres import fresh_postgres_database
from tests.helpers.service import Service, make_settings
from training.synthetic.shapes import generate_dataset


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def service(request, tmp_path_factory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("service")
    if request.param == "sqlite":
        database = nullcontext(f"sqlite:///{tmp / 'db.sqlite'}")
    else:
        database = fresh_postgres_database(request.getfixturevalue("postgres_admin"))
    with database as url:
        settings = make_settings(tmp, url, max_upload_bytes=200_000, max_image_pixels=1_000_000)
        upgrade(url)
        engine = make_engine(url)
        session_factory = make_session_factory(engine)
        dataset = generate_dataset(tmp / "synthetic", n=40, seed=0, image_size=32)
        report = ingest(dataset.manifest, settings, session_factory)
        with TestClient(create_app(settings)) as client:
            yield Service(settings, client, dataset, report, session_factory)
        engine.dispose()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing (CI installs Debian's chromium)")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()
