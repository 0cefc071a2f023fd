"""A small ingested service per backend (``test:tiny`` over 40 synthetic pairs), shared by a module; Chromium
for the browser tests, which are marked ``browser`` here."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.helpers.browser import ARGS, CHROMIUM
from tests.helpers.postgres import backend_database
from tests.helpers.service import Service, stack


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def service(request, tmp_path_factory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("service")
    with (
        backend_database(request, tmp) as url,
        stack(tmp, url, n=40, max_upload_bytes=200_000, max_image_pixels=1_000_000) as s,
    ):
        with TestClient(create_app(s.settings)) as client:
            yield Service(s.settings, client, s.dataset, s.report, s.session_factory)


def pytest_collection_modifyitems(items):
    """Every test that uses the ``browser`` fixture is marked ``browser`` (``make test-fast`` leaves them out)."""
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)


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
