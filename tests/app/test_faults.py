"""Faults, each provoked: a database file truncated or replaced under the server, a PostgreSQL outage
under load, a broken new index, a full disk during ingestion, and a burst far over the cap."""

from __future__ import annotations

import asyncio
import errno
import io
import os
import shutil
import threading

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import text

from app.db import crud
from app.db.session import make_engine, make_session_factory
from app.main import create_app
from app.pipelines.ingest import ingest
from index import shards
from tests.helpers.service import free_port, ingested, serving, stack, wait_for
from training.synthetic.shapes import generate_dataset


@pytest.fixture
def sqlite_service(tmp_path):
    db = tmp_path / "db.sqlite"
    settings = ingested(tmp_path, f"sqlite:///{db}", n=30, index_refresh_seconds=0.1)
    with TestClient(create_app(settings)) as client:
        yield client, db, settings


def _search(client):
    return client.post("/v1/search/text", json={"query": "a red circle", "k": 3})


@pytest.mark.parametrize("how", ["truncated", "replaced"])
def test_readyz_sees_a_broken_database_file_and_the_server_recovers_without_a_restart(sqlite_service, how):
    client, db, _ = sqlite_service
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert _search(client).status_code == 200
    backup = db.with_suffix(".backup")
    shutil.copy(db, backup)
    for extra in ("-wal", "-shm"):  # the WAL is checkpointed into the copy by the next writer anyway
        shutil.copy(str(db) + extra, str(backup) + extra) if os.path.exists(str(db) + extra) else None
    if how == "truncated":
        db.write_bytes(b"")
    else:  # another file put in its place (a different inode)
        other = db.with_suffix(".other")
        other.write_bytes(b"not a database at all" * 100)
        os.replace(other, db)
    broken = client.get("/readyz")
    assert broken.status_code == 503 and "database unavailable" in " ".join(broken.json()["problems"])
    failed = _search(client)
    assert failed.status_code == 503 and failed.json()["code"] == "database_unavailable"
    assert failed.headers["retry-after"]
    restored = db.with_suffix(".restored")
    shutil.copy(backup, restored)
    os.replace(restored, db)  # restored from the backup, as an operator would
    wait_for(lambda: client.get("/readyz").status_code == 200)
    assert all(_search(client).status_code == 200 for _ in range(20))  # every request, not 60-80%


def _warned(client, wanted: str):
    """The /readyz answer once one of its warnings names ``wanted``."""
    ready = client.get("/readyz")
    return ready if wanted in " ".join(ready.json()["warnings"]) else None


def test_a_corrupt_or_missing_new_index_leaves_the_old_one_serving(sqlite_service, tmp_path):
    client, db, settings = sqlite_service
    first = _search(client).json()["index"]["id"]
    sf = make_session_factory(make_engine(f"sqlite:///{db}"))
    for broken in ("corrupt", "missing"):
        folder = tmp_path / f"broken-{broken}"
        if broken == "corrupt":
            folder.mkdir()
            (folder / "index.faiss").write_bytes(b"\x00garbage" * 64)
            (folder / "index.json").write_text("{}")
        with sf() as session:
            model = crud.get_active_model(session)
            row = crud.create_index(
                session,
                model_id=model.id,
                modality="image",
                path=str(folder),
                factory="IDMap2,Flat",
                kind="flat",
                dim=32,
                ntotal=30,
            )
            crud.activate_index(session, row.id)
            session.commit()
        ready = wait_for(lambda wanted=f"index #{row.id} failed to load": _warned(client, wanted))
        assert ready.status_code == 200 and not ready.json()["problems"]
        answer = _search(client)
        assert answer.status_code == 200 and answer.json()["index"]["id"] == first


@pytest.fixture
def empty(tmp_path):
    """A migrated service with nothing ingested yet."""
    with stack(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", n=0) as s:
        yield s.settings, s.session_factory


def test_a_full_disk_during_ingest_fails_cleanly_and_keeps_what_was_committed(empty, tmp_path, monkeypatch):
    settings, sf = empty
    dataset = generate_dataset(tmp_path / "ds", n=40, seed=0, image_size=32)
    import index.embed

    monkeypatch.setattr(index.embed, "plan_shards", _small_shards(index.embed.plan_shards))
    real_save = shards._save_atomic
    calls = {"n": 0}

    def fill_up(path, array):
        calls["n"] += 1
        if calls["n"] == 5:  # the third shard's vectors: the disk is full
            with open(str(path) + ".partial", "wb") as f:  # what a real writer leaves: nothing visible
                f.write(b"")
            os.remove(str(path) + ".partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real_save(path, array)

    monkeypatch.setattr(shards, "_save_atomic", fill_up)
    with pytest.raises(OSError) as info:
        ingest(dataset.manifest, settings, sf)
    assert info.value.errno == errno.ENOSPC
    with sf() as session:
        model = crud.get_active_model(session)
        assert crud.count_items(session) == 40  # the rows were committed before the embedding
    images = settings.data_dir / "embeddings" / str(model.id) / "image"
    done_ids, x = shards.load_all(images)
    assert len(done_ids) == 20 and np.isfinite(x).all()  # two whole shards, readable
    assert not [p for p in images.iterdir() if ".tmp-" in p.name]  # no temporary file left behind
    monkeypatch.setattr(shards, "_save_atomic", real_save)  # space is freed: the next run finishes
    again = ingest(dataset.manifest, settings, sf)
    assert again.added == 0 and again.embedded["image"] == 20 and set(again.indexes) == {"image", "text"}


def _small_shards(plan):
    return lambda items, shard_size: plan(items, 10)


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), "blue").save(buf, format="PNG")
    return buf.getvalue()


def test_256_concurrent_mixed_requests_get_no_5xx_and_a_fast_429_over_the_cap(tmp_path):
    settings = ingested(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", n=30, max_inflight=32, threads=8)
    image = _png()

    async def one(client, i):
        kind = i % 3
        if kind == 0:
            return await client.post("/v1/search/text", json={"query": f"a red circle {i}", "k": 5})
        if kind == 1:
            return await client.post("/v1/search/image", files={"file": ("q.png", image, "image/png")})
        return await client.get("/v1/items/1/image")

    async def burst(base):
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
            responses = []
            for round_ in range(4):
                responses += await asyncio.gather(*(one(client, round_ * 256 + i) for i in range(256)))
            return responses

    with serving(create_app(settings), free_port(), settings) as base:
        responses = asyncio.run(burst(base))
    statuses = [r.status_code for r in responses]
    assert not [s for s in statuses if s >= 500]
    assert set(statuses) <= {200, 429} and statuses.count(200) > 0
    refused = [r for r in responses if r.status_code == 429]
    assert refused and all(r.headers["retry-after"] == "1" and r.json()["code"] == "overloaded" for r in refused)


@pytest.mark.postgres
def test_a_postgresql_outage_under_load_is_503_and_the_service_recovers_by_itself(postgres_admin, tmp_path):
    from tests.helpers.postgres import fresh_postgres_database

    with fresh_postgres_database(postgres_admin) as url:
        settings = ingested(tmp_path, url, n=30, index_refresh_seconds=0.2)
        name = url.rsplit("/", 1)[1]
        statuses: list[int] = []
        stop = threading.Event()
        with serving(create_app(settings), free_port()) as base:

            def load():
                with httpx.Client(base_url=base, timeout=60) as client:
                    while not stop.is_set():
                        statuses.append(client.post("/v1/search/text", json={"query": "a red circle"}).status_code)

            clients = [threading.Thread(target=load) for _ in range(8)]
            for c in clients:
                c.start()
            wait_for(lambda: statuses.count(200) > 20)
            with postgres_admin.connect() as admin:  # the database goes away: connections cut, new ones refused
                admin.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
                admin.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
            before = len(statuses)
            wait_for(lambda: statuses[before:].count(503) > 10)
            assert httpx.get(f"{base}/readyz").status_code == 503
            with postgres_admin.connect() as admin:  # and comes back
                admin.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            back = len(statuses)
            wait_for(lambda: statuses[-20:].count(200) == 20 and len(statuses) > back + 20)
            stop.set()
            for c in clients:
                c.join()
            assert httpx.get(f"{base}/readyz").status_code == 200
    assert not [s for s in statuses if s not in (200, 503)]  # 503 while it was down, never a 500
