"""The search page's mode selector in a real browser: the chosen mode reaches the API, the summary names
the mode that ranked (and, for hybrid, the weights it fused with), and a lexical or hybrid hit shows where each
list placed it."""

from __future__ import annotations

import pytest

from app.main import create_app
from tests.helpers.service import free_port, ingested, serving


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search-ui-modes")
    settings = ingested(tmp, f"sqlite:///{tmp / 'db.sqlite'}", n=20)
    with serving(create_app(settings), free_port()) as base:
        yield base


def _search(page) -> dict:
    with page.expect_response(lambda r: "/v1/search/text" in r.url) as answer:
        page.click("#text-form button")
    page.wait_for_function("!document.getElementById('summary').textContent.includes('searching')")
    return answer.value.request.post_data_json


def test_the_mode_selector(browser, site):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(site + "/")
    page.fill("#query", "a red circle")
    assert "mode" not in _search(page)  # the default: the server's
    page.select_option("#mode", "lexical")
    assert _search(page)["mode"] == "lexical"
    assert "by lexical" in page.inner_text("#summary")
    first = page.locator("#results .score").first.inner_text()
    assert "words #1" in first and "meaning" not in first
    assert "weights" not in page.inner_text("#summary")
    page.select_option("#mode", "hybrid")
    with page.expect_response(lambda r: "/v1/search/text" in r.url) as answer:
        assert _search(page)["mode"] == "hybrid" and "by hybrid" in page.inner_text("#summary")
    weight = answer.value.json()["vector_weight"]  # the weight the fusion used for this query, on the page
    assert f"weights: meaning {weight:.2f}, words {1 - weight:.2f}" in page.inner_text("#summary")
    page.select_option("#mode", "vector")
    assert _search(page)["mode"] == "vector"
    shown = page.locator("#results .score").first.inner_text()
    assert "meaning #" not in shown and "words #" not in shown  # vector mode has no parts to show
    assert not errors
