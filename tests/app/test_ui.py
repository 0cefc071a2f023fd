"""The web UI: the page and its assets are served, and the script only touches elements the page has."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from app.api.routes.ui import STATIC


def test_page_and_assets_are_served(service):
    page = service.client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="/ui/app.js"' in page.text and 'href="/ui/app.css"' in page.text
    for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
        asset = service.client.get(f"/ui/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
        assert asset.content == (STATIC / name).read_bytes()


@pytest.mark.parametrize("name", ["index.html", "..%2Fapp.js", "secret.env", "app.jsx"])
def test_only_the_listed_assets_are_served(service, name):
    assert service.client.get(f"/ui/{name}").status_code == 404


def test_the_page_is_not_in_the_api_schema(service):
    paths = service.client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and "/ui/{name}" not in paths


def test_every_element_the_script_uses_exists_in_the_page():
    script = (STATIC / "app.js").read_text()
    page = (STATIC / "index.html").read_text()
    used = set(re.findall(r'\$\("([\w-]+)"\)', script))
    present = set(re.findall(r'\bid="([\w-]+)"', page))
    assert used and used <= present, used - present


def test_the_script_calls_only_endpoints_that_exist(service):
    script = (STATIC / "app.js").read_text()
    paths = set(service.client.get("/openapi.json").json()["paths"]) | {"/readyz"}
    called = set(re.findall(r'fetch\("(/[\w/]+)"|call\("(/[\w/]+)"', script))
    called = {p for pair in called for p in pair if p}
    assert called and called <= paths, called - paths


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node for a syntax check")
def test_the_script_parses():
    subprocess.run(["node", "--check", str(STATIC / "app.js")], check=True)
