"""The search page's relevance slider in a real browser: each result shows its calibrated relevance, the
slider's floor reaches the API as ``min_relevance`` and hides what falls below it, and a model without a
calibration says why instead."""

from __future__ import annotations

import re

import httpx
import numpy as np
import pytest

from app.db import crud
from app.main import create_app
from app.serving.relevance import NOT_FITTED
from tests.helpers.service import free_port, serving, stack, wait_for
from training.calibration import Calibration


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search-ui-relevance")
    with stack(tmp, f"sqlite:///{tmp / 'db.sqlite'}", n=30) as s:
        with serving(create_app(s.settings), free_port()) as base:
            yield base, s.session_factory


def _calibrate(base: str, sf, mapping: Calibration | None) -> None:
    """Store ``mapping`` (None: no calibration) and wait until the server's refresher has loaded it."""
    with sf() as session:
        model = crud.get_active_model(session)
        model.calibration = None if mapping is None else {
            "status": "fitted", "dataset": "db", "method": mapping.method, "fitted_at": str(np.random.random()),
            "directions": {"text->image": {"map": mapping.as_json()}}, "reasons": {},
        }  # fmt: skip
        session.commit()

    def loaded() -> bool:
        body = httpx.post(f"{base}/v1/search/text", json={"query": "a red circle", "mode": "vector"}).json()
        return body["relevance"]["calibrated"] == (mapping is not None) and (
            mapping is not None or body["relevance"]["reason"] == NOT_FITTED
        )

    wait_for(loaded, timeout=10)


def _search(page, sent: list[dict]) -> list[tuple[int, float, float | None]]:
    """(id, score, relevance) of each hit the API sent, checked against what the page shows."""
    with page.expect_response(lambda r: "/v1/search/text" in r.url) as answer:
        page.click("#text-form button")
    sent.append(answer.value.request.post_data_json)
    page.wait_for_function("!document.getElementById('summary').textContent.includes('searching')")
    hits = [(h["id"], h["score"], h["relevance"]) for h in answer.value.json()["data"]]
    shown = page.locator("#results .score").all_inner_texts()
    assert len(shown) == len(hits)
    for text, (item, score, relevance) in zip(shown, hits, strict=True):
        found = re.match(r"score (-?[0-9.]+)(?: · relevance ([0-9.]+))? · #([0-9]+)", text)
        assert found and float(found.group(1)) == round(score, 3) and int(found.group(3)) == item
        assert (found.group(2) is None) == (relevance is None)
        assert relevance is None or float(found.group(2)) == pytest.approx(relevance, abs=0.005)
    return hits


def _slide(page, value: str) -> None:
    page.locator("#min-relevance").evaluate("(e, v) => { e.value = v; e.dispatchEvent(new Event('input')); }", value)


def test_the_relevance_slider(browser, site):
    base, sf = site
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(base + "/")
    page.fill("#query", "a red circle")
    page.fill("#k", "30")
    page.select_option("#mode", "vector")
    sent: list[dict] = []
    _calibrate(base, sf, None)
    plain = _search(page, sent)
    assert plain and all(r is None for *_, r in plain)  # no calibration: no relevance, and the reason
    assert "no relevance: the model has no relevance calibration yet" in page.inner_text("#summary")

    scores = sorted({round(s, 4) for _, s, _ in plain})
    middle = (scores[len(scores) // 2] + scores[len(scores) // 2 + 1]) / 2
    _calibrate(base, sf, Calibration("platt", a=40.0, b=-40.0 * middle))  # 0.5 halfway down the list
    shown = _search(page, sent)
    relevance = [r for *_, r in shown]
    assert "min_relevance" not in sent[-1] and all(r is not None for r in relevance)
    assert relevance == sorted(relevance, reverse=True) and relevance[0] > 0.5 > relevance[-1]

    _slide(page, "0.5")
    assert page.inner_text("#min-relevance-value") == "0.50"
    kept = _search(page, sent)
    assert sent[-1]["min_relevance"] == 0.5
    assert kept == [h for h in shown if h[2] >= 0.5] and 0 < len(kept) < len(shown)

    _slide(page, "0")
    assert page.inner_text("#min-relevance-value") == "off"
    _search(page, sent)
    assert "min_relevance" not in sent[-1]
    assert not errors
