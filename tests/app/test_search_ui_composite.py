"""The search page's composite queries in a real browser: "more like this" / "less like this" on a hit
refine the running query (the request's parts, the results and the listed parts change), a part's weight
can be edited and a part removed, reset goes back to the search that started it, and every label is
shown as text, never run as markup."""

from __future__ import annotations

import pytest

from app.main import create_app
from tests.helpers.service import free_port, ingested, serving

NASTY = 'a red <img src=x onerror="window.pwned=1"> circle'


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search-ui-composite")
    settings = ingested(tmp, f"sqlite:///{tmp / 'db.sqlite'}", n=20)
    with serving(create_app(settings), free_port()) as base:
        yield base


def _after(page, path: str, action) -> dict:
    """Run ``action``, wait for the search it sends to ``path`` to be shown; the request's JSON body."""
    with page.expect_response(lambda r: path in r.url) as answer:
        action()
    page.wait_for_function("!document.getElementById('summary').textContent.includes('searching')")
    assert answer.value.ok, answer.value.text()
    return answer.value.request.post_data_json


def _hits(page) -> list[int]:
    return [int(i) for i in page.eval_on_selector_all("#results button.more", "bs => bs.map(b => b.dataset.id)")]


def _parts(page) -> list[tuple[str, str]]:
    labels = page.eval_on_selector_all("#parts .part-label", "els => els.map(e => e.textContent)")
    weights = page.eval_on_selector_all("#parts input.weight", "els => els.map(e => e.value)")
    return list(zip(labels, weights, strict=True))


def test_more_and_less_like_this_refine_the_running_query(browser, site):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(site + "/")
    assert page.is_hidden("#refine")
    page.fill("#query", NASTY)
    _after(page, "/v1/search/text", lambda: page.click("#text-form button"))
    assert _parts(page) == [(f'"{NASTY}"', "1")]  # the query as text: no element was made of it
    before = _hits(page)
    assert len(before) == 12

    # test:tiny draws every image in nearly one direction, so an item part moves ranks a little at a
    # time: "more like this" again on the same hit raises its weight by 0.25 each time
    last = before[-1]
    for clicks in range(1, 9):
        body = _after(page, "/v1/search/composite", lambda: page.click(f'#results button.more[data-id="{last}"]'))
        assert body["parts"] == [{"text": NASTY, "weight": 1}, {"item": last, "weight": 0.25 * clicks}]
        assert len(_parts(page)) == 2 and _parts(page)[1] == (_parts(page)[1][0], f"{0.25 * clicks:g}")
        assert _parts(page)[1][0].startswith(f"#{last} ") and "2 part(s)" in page.inner_text("#summary")
        refined = _hits(page)
        if refined.index(last) < before.index(last):
            break
    assert refined != before and refined.index(last) < before.index(last), (before, refined)

    first = refined[0]
    for clicks in range(1, 9):
        body = _after(page, "/v1/search/composite", lambda: page.click(f'#results button.less[data-id="{first}"]'))
        assert body["parts"][2] == {"item": first, "weight": -0.25 * clicks} and len(body["parts"]) == 3
        after_less = _hits(page)
        if after_less[0] != first:
            break
    assert after_less[0] != first, after_less  # no longer first
    assert page.locator("#parts li").nth(2).get_attribute("class") == "negative"

    weight = page.locator("#parts input.weight").nth(1)
    # as a user edits it: type, then leave the field (the browser's own change event; a synthetic one
    # left the native change pending, to fire, with a second search, when the next click took the focus)
    body = _after(page, "/v1/search/composite", lambda: (weight.fill("3"), weight.blur()))
    assert body["parts"][1] == {"item": last, "weight": 3}

    body = _after(page, "/v1/search/composite", lambda: page.locator("#parts button.remove").nth(2).click())
    assert [p.get("item") for p in body["parts"]] == [None, last] and len(_parts(page)) == 2

    body = _after(page, "/v1/search/text", lambda: page.click("#reset-parts"))
    assert body["query"] == NASTY and _parts(page) == [(f'"{NASTY}"', "1")] and _hits(page) == before
    assert page.evaluate("window.pwned") is None and page.locator("#parts img").count() == 0
    assert not errors
