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


@pytest.mark.parametrize(
    "name", ["index.html", "..%2Fapp.js", "secret.env", "app.jsx", "vendor/%2E%2E/admin.html", "vendor/x.js"]
)
def test_only_the_listed_assets_are_served(service, name):
    assert service.client.get(f"/ui/{name}").status_code == 404


def test_the_page_is_not_in_the_api_schema(service):
    paths = service.client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and "/ui/{name}" not in paths


ADMIN_SCRIPTS = ["admin.js", "admin-job.js", "admin-pages.js"]


@pytest.mark.parametrize(
    "script_name, page_name", [("app.js", "index.html"), *((name, "admin.html") for name in ADMIN_SCRIPTS)]
)
def test_every_element_the_script_uses_exists_in_the_page(script_name, page_name):
    script = (STATIC / script_name).read_text()
    page = (STATIC / page_name).read_text()
    used = set(re.findall(r'\$\("([\w-]+)"\)', script))
    present = set(re.findall(r'\bid="([\w-]+)"', page))
    assert used and used <= present, used - present


def test_the_script_calls_only_endpoints_that_exist(service):
    script = (STATIC / "app.js").read_text()
    paths = set(service.client.get("/openapi.json").json()["paths"]) | {"/readyz"}
    called = set(re.findall(r'fetch\("(/[\w/]+)"|call\("(/[\w/]+)"', script))
    called = {p for pair in called for p in pair if p}
    assert called and called <= paths, called - paths


def test_the_admin_script_calls_only_admin_endpoints_that_exist(service):
    script = "\n".join((STATIC / name).read_text() for name in ADMIN_SCRIPTS)
    paths = set(service.client.get("/openapi.json").json()["paths"])
    # api("/jobs?limit=25"), api(`/jobs/${job.id}/cancel`), api(`/models/${model.id}/${what}`) ...
    called = {re.sub(r"\$\{[^}]+\}", "X", m).split("?")[0] for m in re.findall(r'api\([`"](/[^`"]+)[`"]', script)}
    templates = {re.sub(r"\{[^}]+\}", "X", p.removeprefix("/v1/admin")) for p in paths if p.startswith("/v1/admin")}
    # `/models/X/X` stands for /models/{id}/evaluate and /models/{id}/promote
    assert called and all(c in templates or c == "/models/X/X" for c in called), called - templates
    assert {"/models/X/evaluate", "/models/X/promote"} <= templates


def test_admin_page_is_served(service):
    page = service.client.get("/admin")
    assert page.status_code == 200 and 'src="/ui/admin.js"' in page.text
    for src in re.findall(r'(?:src|href)="/ui/([\w./-]+)"', page.text):  # its scripts, styles and uPlot, offline
        assert service.client.get(f"/ui/{src}").content == (STATIC / src).read_bytes()
    licence = service.client.get("/ui/vendor/uPlot.LICENSE")
    assert licence.status_code == 200 and "MIT License" in licence.text  # the charts' licence ships with them


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node for a syntax check")
@pytest.mark.parametrize("name", ["app.js", "admin-charts.js", *ADMIN_SCRIPTS])
def test_the_scripts_parse(name):
    subprocess.run(["node", "--check", str(STATIC / name)], check=True)
