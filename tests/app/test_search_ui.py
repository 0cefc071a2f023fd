"""The search page in a real browser: a text query shows scored results; "hide near-duplicates" reaches
the API and changes what is shown; an image query from a result works."""

from __future__ import annotations

import re

import pytest

from app.main import create_app
from tests.helpers.browser import screenshot
from tests.helpers.service import free_port, ingested, serving


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search-ui")
    settings = ingested(tmp, f"sqlite:///{tmp / 'db.sqlite'}")
    with serving(create_app(settings), free_port()) as base:
        yield base


def _scores(page) -> list[float]:
    texts = page.locator("#results .score").all_inner_texts()
    return [float(re.match(r"score (-?[0-9.]+)", t).group(1)) for t in texts]


def _search(page, requests: list[dict]) -> list[float]:
    with page.expect_response(lambda r: "/v1/search/" in r.url) as answer:
        page.click("#text-form button")
    requests.append(answer.value.request.post_data_json)
    page.wait_for_function("!document.getElementById('summary').textContent.includes('searching')")
    return _scores(page)


def test_scores_a_cutoff_and_dedupe_from_the_page(browser, site):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(site + "/")
    page.fill("#query", "a red circle")
    page.fill("#k", "30")
    sent: list[dict] = []
    everything = _search(page, sent)
    assert len(everything) == 30 and everything == sorted(everything, reverse=True)
    assert "min_relevance" not in sent[0] and "dedupe" not in sent[0]  # the relevance slider starts off
    assert page.inner_text("#min-relevance-value") == "off"  # (its cutoff: tests/app/test_search_ui_relevance.py)

    page.check("#dedupe")
    deduped = _search(page, sent)
    assert sent[-1]["dedupe"] == 0.95 and "min_relevance" not in sent[-1]
    assert 0 < len(deduped) <= 30

    with page.expect_response(lambda r: "/v1/search/image" in r.url) as answer:  # "similar" on the first hit
        page.locator("#results button").first.click()
    assert answer.value.status == 200
    screenshot(page, "search")
    assert not errors


def test_of_two_overlapping_searches_the_later_one_is_shown(browser, site):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(site + "/")
    held = []  # the searches' requests, answered in the order the test chooses
    page.route("**/v1/search/text", lambda route: held.append(route))
    for query in ("a red circle", "a blue square"):
        page.fill("#query", query)
        page.click("#text-form button")
    for _ in range(200):  # the route handler runs as the page's events are dispatched: up to 10 s
        if len(held) == 2:
            break
        page.wait_for_timeout(50)
    assert len(held) == 2
    with page.expect_response("**/v1/search/text"):
        held[1].continue_()
    page.wait_for_function("document.getElementById('summary').textContent.includes('a blue square')")
    with page.expect_response("**/v1/search/text"):
        held[0].continue_()  # the earlier search answers last
    page.wait_for_timeout(500)  # what a stale answer would have rendered, it renders within milliseconds
    summary = page.inner_text("#summary")
    assert "a blue square" in summary and "a red circle" not in summary
