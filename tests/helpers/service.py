"""A service under test: settings for ``test:tiny``, an ingested database (``stack``), uvicorn on loopback, polling."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy.orm import sessionmaker

from app.config import Settings, uvicorn_options
from app.db.session import make_engine, make_session_factory, upgrade
from app.pipelines.ingest import IngestReport, ingest
from training.synthetic.shapes import SyntheticDataset, generate_dataset


@dataclass
class Service:
    settings: Settings
    client: TestClient
    dataset: SyntheticDataset
    report: IngestReport
    session_factory: object


def wait_for(condition, timeout: float = 60.0, every: float = 0.05):
    """Poll ``condition`` until it returns something truthy (and return that), or fail after ``timeout``.

    The default is generous on purpose: what is awaited is often a process starting (torch imports take
    tens of seconds on a loaded 2-core machine, as under ``pytest -n 2``); a test that measures a
    latency asserts it separately."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout} s: {condition}")
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(app, port: int, settings: Settings | None = None) -> Iterator[str]:
    """``app`` on uvicorn in a thread, on loopback, with the options `crossmodal serve` takes from ``settings``
    (the defaults when None); yields its base URL."""
    import uvicorn

    options = uvicorn_options(settings or Settings.model_construct())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=120)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def make_settings(tmp, url: str, **overrides) -> Settings:
    # vector mode: the tests that check rankings against cosine brute force; hybrid has tests of its own.
    # PyTorch: those tests expect exact ties between copies of one image, and FAISS's and numpy's
    # products round identical rows differently by a last bit for some query vectors (ONNX Runtime's
    # "a red circle" is one); the ONNX runtime has tests of its own (tests/app/test_encoders.py).
    values = dict(model_spec="test:tiny", device="cpu", num_workers=0, index_refresh_seconds=0, search_mode="vector")
    values["runtime"] = "torch"
    return Settings(data_dir=tmp, database_url=url, **{**values, **overrides})


@dataclass
class Stack:
    """What ``stack`` yields: the settings, a session factory on the migrated database, the synthetic
    dataset (None when none was generated) and the ingest's report (None when nothing was ingested)."""

    settings: Settings
    session_factory: sessionmaker
    dataset: SyntheticDataset | None
    report: IngestReport | None


@contextmanager
def stack(
    tmp: Path,
    url: str,
    n: int = 40,
    dataset: SyntheticDataset | str | Path | None = None,
    **overrides,
) -> Iterator[Stack]:
    """The migrate-and-ingest stack the service tests start from, with its engine disposed on exit.

    The database at ``url`` is migrated to head; ``tmp`` is the data dir of ``make_settings(tmp, url,
    **overrides)``. What is ingested: ``dataset`` (a ``SyntheticDataset``, or a manifest or folder to
    ingest as it is), else ``n`` synthetic pairs (32 px, seed 0) generated under ``tmp / "ds"``; ``n=0``
    with no ``dataset`` ingests nothing (a migrated, empty service).
    """
    upgrade(url)
    settings = make_settings(tmp, url, **overrides)
    if dataset is None and n:
        dataset = generate_dataset(tmp / "ds", n=n, seed=0, image_size=32)
    engine = make_engine(url)
    try:
        session_factory = make_session_factory(engine)
        report = None
        if dataset is not None:
            source = dataset.manifest if isinstance(dataset, SyntheticDataset) else dataset
            report = ingest(source, settings, session_factory)
        yield Stack(settings, session_factory, dataset if isinstance(dataset, SyntheticDataset) else None, report)
    finally:
        engine.dispose()


def ingested(tmp, url: str, n: int = 40, **overrides) -> Settings:
    """A migrated database at ``url`` holding ``n`` synthetic pairs (32 px), ingested with
    ``make_settings(tmp, url, **overrides)``, which are returned."""
    with stack(tmp, url, n, **overrides) as s:
        return s.settings
