"""The admin console in a real browser (Debian's Chromium, driven headless by playwright), on one served
service per module: the jobs list and a job's page (live progress, log tail, a fine-tune's curves growing while
it runs, a refused promotion's reason and both reports side by side), models (lineage, active and rollback
target, two compared, promote, roll back), the index ladder, and keys (created, shown once, revoked).
Screenshots only when ``CROSSMODAL_SCREENSHOTS`` names a folder (docs/operations.md)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from app.api.auth import create_key
from app.db import crud
from app.db.models import Index, Job, JobStatus, Model
from app.jobs import child, queue
from app.jobs.context import JobContext
from app.jobs.kinds import handler_for
from app.main import create_app
from index import ladder
from index.pipeline import IndexPolicy, build
from tests.helpers.browser import screenshot
from tests.helpers.service import free_port, serving, stack, wait_for

TRAIN = {
    "lock": {"image_unlocked_groups": None, "text_unlocked_layers": None},
    "data": {"num_workers": 0},
    "optim": {"steps": 30, "batch_size": 8, "warmup_steps": 5, "lr": 1e-3},
    "checkpoint_every": 15,
    "eval_every": 10,
}


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    """Model A active; B (A's weights) promoted then rolled back, so servable; a running ingest job; a key."""
    tmp = tmp_path_factory.mktemp("console")
    url = f"sqlite:///{tmp / 'db.sqlite'}"
    with stack(tmp / "data", url, n=40, index_refresh_seconds=0.2, job_heartbeat_seconds=0.2) as s:
        settings, sf = s.settings, s.session_factory
        with sf() as session:
            a = crud.get_active_model(session)
            b = crud.create_model(session, a.spec, name="candidate B", parent_id=a.id)
            session.commit()
            a_id, b_id = a.id, b.id
        _run_here(settings, sf, "promote", {"kind": "promote", "model_id": b_id, "force": True})
        with sf() as session:
            crud.activate_model(session, a_id)  # back to A: B stays servable, the rollback target
            running = queue.enqueue(session, "ingest", {"kind": "ingest", "source": "/data/in"})
            session.commit()
            lease = queue.lease_of(queue.claim(session, "ui-test-worker", kinds=["ingest"]))
            queue.report_progress(session, lease, 0.42, "embed images: 42/100", {"stage": "embed images", "eta_s": 12})
            queue.append_log(session, lease, ["embedding batch 4 of 10"])
            key = create_key(session, "ui", "admin")[1]
            session.commit()
        with serving(create_app(settings), free_port()) as base:
            yield SimpleNamespace(
                settings=settings, sf=sf, key=key, a_id=a_id, b_id=b_id, running_id=running.id, base=base
            )


def _open(browser, console, where: str = "jobs"):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{console.base}/admin#{where}")
    page.fill("#key", console.key)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector(f"#page-{where.split('/')[0]}:not([hidden])")
    return page


def test_jobs_list_and_a_jobs_page_follow_progress_and_cancel(browser, console):
    page = _open(browser, console)
    row = page.locator(f'#jobs tr[data-job="{console.running_id}"]')
    row.wait_for()
    assert "running" in row.inner_text() and "42%" in row.inner_text() and "ETA 12 s" in row.inner_text()
    row.click()
    page.wait_for_selector("#page-job:not([hidden])")
    page.wait_for_function("document.getElementById('job-tail').innerText.includes('embedding batch 4 of 10')")
    assert "stage: embed images" in page.inner_text("#job-stage")
    with console.sf() as session:  # progress moves on: the page follows the job's events without a reload
        lease = queue.lease_of(session.get(Job, console.running_id))
        details = {"stage": "embed images", "done": 90, "total": 100, "unit": "images", "rate": 4.5, "eta_s": 3}
        queue.report_progress(session, lease, 0.9, "embed images: 90/100", details)
        session.commit()
    page.wait_for_function("document.getElementById('job-stage').innerText.includes('90/100 images')")
    assert "4.50 images/s" in page.inner_text("#job-stage") and "ETA 3 s" in page.inner_text("#job-stage")
    assert "90%" in page.inner_text("#job-progress")
    page.locator("#job-actions button", has_text="Cancel").click()
    wait_for(lambda: _job(console.sf, console.running_id).cancel_requested_at is not None)
    screenshot(page, "admin-jobs")
    page.close()


class _Paced(JobContext):
    """A fine-tune at a pace a person (and the page) can follow: 0.1 s a step."""

    def progress(self, stage, done, total=None, **kwargs):
        if stage == "train":
            time.sleep(0.1)
        super().progress(stage, done, total, **kwargs)


def test_a_finetunes_charts_grow_while_it_runs(browser, console):
    settings, sf = console.settings, console.sf
    params = {"kind": "finetune", "config": TRAIN}
    with sf() as session:
        job_id = queue.enqueue(session, "finetune", params).id
        session.commit()
        lease = queue.lease_of(queue.claim(session, "ui-finetune-worker", kinds=["finetune"]))
        session.commit()
    outcome: dict = {}

    def train() -> None:
        try:
            outcome["result"] = handler_for("finetune")(_Paced(lease, "finetune", params, settings, sf), params)
        finally:
            with sf() as session:
                status = JobStatus.SUCCEEDED if "result" in outcome else JobStatus.FAILED
                queue.finish(session, lease, status, result=outcome.get("result"), error=None)
                session.commit()

    thread = threading.Thread(target=train, daemon=True)
    thread.start()
    try:
        page = _open(browser, console, f"job/{job_id}")
        points = "Number(document.getElementById('chart-loss').dataset.points || 0)"
        running = "document.getElementById('job-title').innerText.includes('running')"
        page.wait_for_function(f"{points} >= 2 && {running}", timeout=60_000)
        first = page.evaluate(points)
        page.wait_for_function(f"{points} >= {first} + 5 && {running}", timeout=60_000)  # drawn as it runs
        assert page.locator("#chart-loss canvas").count() == 1 and page.locator("#chart-lr canvas").count() == 1
        page.wait_for_function("document.getElementById('job-title').innerText.includes('succeeded')", timeout=120_000)
    finally:
        thread.join(timeout=120)
    assert page.evaluate(points) == 30
    assert page.evaluate("Number(document.getElementById('chart-val').dataset.points)") == 3  # steps 10, 20, 30
    val_rows = page.locator("#val-rows tr")
    assert val_rows.count() == 3 and val_rows.first.locator("td").first.inner_text() == "10"
    assert "t2i_R@1" in page.inner_text("#val-head") and "model_id" in page.inner_text("#report-rows")
    with sf() as session:  # the curves live with the job in the database (any API replica, any restart)
        series = session.get(Job, job_id).details["series"]
    assert [row[0] for row in series["train"]] == list(range(1, 31)) and len(series["val"]) == 3
    listed = page.request.get(f"{console.base}/v1/admin/jobs", headers={"Authorization": f"Bearer {console.key}"})
    assert all("series" not in (j["details"] or {}) for j in listed.json()["data"])  # the list stays small
    screenshot(page, "admin-finetune")
    page.click("#charts-on")  # charts off: the numbers stay, as a table
    page.wait_for_function("document.querySelectorAll('#job-curves canvas').length === 0")
    assert page.locator("#val-rows tr").count() == 3
    page.click("#charts-on")
    page.close()


def test_a_refused_promotion_shows_its_reason_and_both_reports(browser, console):
    sf = console.sf
    with sf() as session:  # A's own weights cannot beat A
        active = crud.get_active_model(session)
        twin_id = crud.create_model(session, active.spec, name="twin", parent_id=active.id).id
        job_id = queue.enqueue(session, "promote", {"kind": "promote", "model_id": twin_id}).id
        session.commit()
        job = queue.claim(session, "ui-promote-worker", kinds=["promote"])
        session.commit()
    assert child.run(job_id, job.worker_id, job.attempts, console.settings) == 0  # the child's own path, in-process
    job = _job(sf, job_id)
    assert job.status == "failed" and job.result["refused"].startswith("refused: ")

    page = _open(browser, console, f"job/{job_id}")
    page.wait_for_selector("#job-outcome:not([hidden])")
    metric = job.result["decision"]["metric"]
    value = job.result["decision"]["candidate"]
    assert page.inner_text("#job-outcome").startswith(f"refused: {value:.3f} vs {value:.3f} on {metric}")
    assert "Traceback" not in page.inner_text("body") and "refused" in page.inner_text("#job-title")
    decider = page.locator("#decision-rows tr.decider")
    assert decider.inner_text().split("\t")[:3] == [f"{metric} (decides)", f"{value:.3f}", f"{value:.3f}"]
    assert page.locator("#decision-rows tr").count() > 3  # every metric of both reports, side by side
    assert "refused" in page.inner_text("#decision-rows tr.verdict")
    screenshot(page, "admin-refused")
    page.goto(f"{console.base}/admin#jobs")
    page.locator(f'#jobs tr[data-job="{job_id}"] td.status-refused').wait_for()
    page.close()


def test_keys_are_created_shown_once_and_revoked(browser, console):
    page = _open(browser, console, "keys")
    page.on("dialog", lambda dialog: dialog.accept())
    name = '<img src=x onerror="window.pwned=1">'
    page.fill("#new-key-name", name)
    page.select_option("#new-key-role", "admin")
    page.click("#new-key-form button[type=submit]")
    page.wait_for_selector("#new-key:not([hidden])")
    secret = page.inner_text("#new-key-secret")
    assert secret.startswith("cmk_")
    row = page.locator("#keys tr", has_text="onerror")
    row.wait_for()
    assert name in row.inner_text() and page.locator("#keys img").count() == 0  # shown as text, never as HTML
    page.click("#copy-key")
    page.wait_for_function("document.getElementById('copied').innerText !== ''")
    keys_url, auth = f"{console.base}/v1/admin/keys", {"Authorization": f"Bearer {secret}"}
    assert page.request.get(keys_url, headers=auth).status == 200
    screenshot(page, "admin-keys")
    row.locator("button", has_text="Revoke").click()
    page.wait_for_function("document.getElementById('notice').innerText.includes('Revoked key')")
    wait_for(lambda: "Revoke" not in row.inner_text())
    assert page.request.get(keys_url, headers=auth).status == 401
    page.goto(f"{console.base}/admin#jobs")  # the secret is never shown again
    page.goto(f"{console.base}/admin#keys")
    page.wait_for_selector("#keys tr")
    assert secret not in page.inner_text("body") and page.evaluate("window.pwned") is None
    page.close()


def test_indexes_page_draws_each_ladder(browser, console, tmp_path):
    laddered = _laddered_index(console, tmp_path)  # the stack's 40 items are searched exactly: no ladder there
    page = _open(browser, console, "indexes")
    card = page.locator(f'.index-card[data-index="{laddered.id}"]')
    card.wait_for()
    assert page.locator(".index-card").count() >= 3  # the stack's image and text indexes too
    ladder = laddered.stats["ladder"]
    assert card.locator("table.ladder tbody tr").count() == len(ladder) == 2
    assert f"{laddered.kind} (published)" in card.locator("tr.chosen").inner_text() and "MiB" in card.inner_text()
    published = card.locator(".published").inner_text()
    assert "target 0.95" in published and "text " in published and "image " in published  # both query modalities
    chart = f".index-card[data-index='{laddered.id}'] .ladder-chart"
    points = sum(len(r.get("curve") or [None]) for r in ladder) + 1  # every rung's curve, and the published mark
    page.wait_for_function(f'Number(document.querySelector("{chart}").dataset.points) === {points}')
    assert card.locator("canvas").count() == 1
    screenshot(page, "admin-indexes")
    page.close()


def _laddered_index(console, tmp_path) -> Index:
    """An index over 10,000 random vectors, its ladder measured (flat against IVF-Flat), kept as a retired row."""
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((ladder.EXACT_BELOW, 16)).astype("float32")
    xq = rng.standard_normal((100, 16)).astype("float32")
    policy = IndexPolicy(ladder=("flat", "ivf_flat"))
    built = build(np.arange(len(xb)), xb, xq, tmp_path / "ix", policy, served_name="text", same_name="image")
    with console.sf() as session:
        row = crud.create_index(session, model_id=console.a_id, modality="image", path=str(built.path),
                                factory=built.factory, dim=16, ntotal=built.ntotal, kind=built.kind,
                                stats=built.stats, status="retired")  # fmt: skip
        session.commit()
        session.refresh(row)
        session.expunge(row)
    return row


def test_models_page_lineage_compare_promote_and_roll_back(browser, console):
    sf = console.sf
    page = _open(browser, console, "models")
    b_row = page.locator(f'#models tr[data-model="{console.b_id}"]')
    b_row.wait_for()
    assert "candidate B" in b_row.inner_text() and "t2i R@1" in b_row.inner_text()
    assert f"#{console.a_id} → #{console.b_id}" in b_row.inner_text() and "rollback target" in b_row.inner_text()
    assert f"rollback target: #{console.b_id}" in page.inner_text("#models-summary")
    page.locator(f'#models tr[data-model="{console.a_id}"] .compare-box').check()
    b_row.locator(".compare-box").check()
    page.wait_for_selector("#model-compare:not([hidden])")
    assert "t2i_R@1" in page.inner_text("#compare-rows")
    b_row.click()
    page.wait_for_selector("#model-history:not([hidden])")
    assert page.locator("#history-rows tr").count() >= 1  # its evaluation by the forced promotion
    screenshot(page, "admin-models")

    b_row.locator("button", has_text="Promote").click()
    wait_for(lambda: _jobs(sf, "promote") >= 3)  # the page queued another promotion of B
    page.wait_for_function("document.getElementById('notice').innerText.includes('promote model')")
    page.click("#rollback")
    wait_for(lambda: _active(sf) == console.b_id)  # the rollback target was B
    page.wait_for_function("document.getElementById('notice').innerText.includes('Rolled back')")
    page.close()


def _run_here(settings, sf, kind: str, params: dict) -> None:
    """One job run to success in this process, as a worker's child runs it (claim, handler, finish): what the
    page shows is the state it leaves. Workers and their child processes are tested in tests/app/jobs."""
    with sf() as session:
        queue.enqueue(session, kind, params)
        session.commit()
        lease = queue.lease_of(queue.claim(session, "ui-setup-worker", kinds=[kind]))
        session.commit()
    result = handler_for(kind)(JobContext(lease, kind, params, settings, sf), params)
    with sf() as session:
        queue.finish(session, lease, JobStatus.SUCCEEDED, result=result)
        session.commit()


def _job(sf, job_id):
    with sf() as session:
        return session.get(Job, job_id)


def _jobs(sf, kind):
    with sf() as session:
        return session.query(Job).filter(Job.kind == kind).count()


def _active(sf):
    with sf() as session:
        return session.query(Model).filter(Model.status == "active").one().id
