"""The admin page in a real browser (Debian's Chromium, driven headless by playwright): sign in, live job
progress, cancel, models with their reports, promote, roll back. A screenshot is written for a person to see."""

from __future__ import annotations

import pytest

from app.api.auth import create_key
from app.db import crud
from app.db.models import Job, JobStatus, Model
from app.jobs import queue
from app.jobs.context import JobContext
from app.jobs.kinds import handler_for
from app.main import create_app
from tests.helpers.browser import ARTIFACTS
from tests.helpers.service import free_port, serving, stack, wait_for


@pytest.fixture
def admin(tmp_path):
    """Model A active, model B promoted then rolled back (so both are servable), a running job, a key."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    with stack(tmp_path / "data", url, n=40, index_refresh_seconds=0.2, job_heartbeat_seconds=0.2) as s:
        settings, sf = s.settings, s.session_factory
        with sf() as session:
            a = crud.get_active_model(session)
            b = crud.create_model(session, a.spec, name="candidate B", parent_id=a.id)
            session.commit()
            a_id, b_id = a.id, b.id
        _run_here(settings, sf, "promote", {"kind": "promote", "model_id": b_id, "force": True})
        with sf() as session:
            crud.activate_model(session, a_id)  # back to A: B stays servable
            running = queue.enqueue(session, "ingest", {"kind": "ingest", "source": "/data/in"})
            session.commit()
            lease = queue.lease_of(queue.claim(session, "ui-test-worker", kinds=["ingest"]))
            queue.report_progress(session, lease, 0.42, "embed images: 42/100", {"stage": "embed images", "eta_s": 12})
            queue.append_log(session, lease, ["embedding batch 4 of 10"])
            key = create_key(session, "ui", "admin")[1]
            session.commit()
        yield settings, sf, key, a_id, b_id, running.id


def test_admin_page_shows_jobs_and_models_and_drives_them(browser, admin):
    settings, sf, key, a_id, b_id, running_id = admin
    with serving(create_app(settings), free_port()) as base:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{base}/admin")
        page.fill("#key", key)
        page.click("#key-form button[type=submit]")
        row = page.locator(f'#jobs tr[data-job="{running_id}"]')
        row.wait_for()
        assert "running" in row.inner_text() and "42%" in row.inner_text() and "ETA 12 s" in row.inner_text()
        row.click()
        page.wait_for_selector("#job-log:not([hidden])")
        assert "embedding batch 4 of 10" in page.inner_text("#job-log")

        with sf() as session:  # progress moves on: the page follows without a reload
            lease = queue.lease_of(session.get(Job, running_id))
            queue.report_progress(session, lease, 0.9, "embed images: 90/100", None)
            session.commit()
        page.wait_for_function(
            f"document.querySelector('#jobs tr[data-job=\"{running_id}\"]').innerText.includes('90%')"
        )
        row.locator("button", has_text="Cancel").click()
        wait_for(lambda: _job(sf, running_id).cancel_requested_at is not None)

        models = page.locator("#models tr")
        wait_for(lambda: models.count() == 2)
        b_row = page.locator(f'#models tr[data-model="{b_id}"]')
        assert "candidate B" in b_row.inner_text() and "t2i R@1" in b_row.inner_text()
        b_row.locator("button", has_text="Promote").click()
        wait_for(lambda: _jobs(sf, "promote") == 2)  # the page queued a second promotion of B
        page.wait_for_function("document.getElementById('notice').innerText.includes('promote model')")
        page.locator('#jobs tr:has-text("promote")').first.wait_for()

        page.click("#rollback")
        wait_for(lambda: _active(sf) == b_id)  # "previous" of A is B, which was active before it
        page.wait_for_function("document.getElementById('notice').innerText.includes('Rolled back')")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "admin.png"), full_page=True)
        assert (ARTIFACTS / "admin.png").stat().st_size > 10_000


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
