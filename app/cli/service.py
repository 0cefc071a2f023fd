"""Service commands: serve the API (with an embedded job worker), run a worker."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.common import USER_ERRORS, fail, session_factory, setup
from app.config import uvicorn_options


def serve(
    host: str | None = None,
    port: int | None = None,
    worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="Run one job worker in this process (the default).")
    ] = True,
    workers: Annotated[int, typer.Option("--workers", min=1, help="uvicorn worker processes for the API.")] = 1,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs), with one embedded job worker unless --no-worker."""
    import uvicorn

    from app.jobs.worker import start_embedded

    settings = setup()
    try:
        sf = session_factory(settings)  # a database the code cannot use is a message, not a traceback
    except USER_ERRORS as e:
        raise fail(e) from e
    embedded = start_embedded(settings, sf) if worker else None
    options = uvicorn_options(settings)
    try:
        if workers == 1:
            from app.main import create_app

            bind_host, bind_port = host or settings.host, port or settings.port
            if settings.reuse_port:  # replicas on one host network share the port; the kernel balances
                sock = _reuse_port_socket(bind_host, bind_port)  # held here: uvicorn serves on its descriptor
                uvicorn.run(create_app(settings), fd=sock.fileno(), **options)
            else:
                uvicorn.run(create_app(settings), host=bind_host, port=bind_port, **options)
        else:  # several processes import the app themselves: settings from the environment
            uvicorn.run(
                "app.asgi:app", host=host or settings.host, port=port or settings.port, workers=workers, **options
            )
    finally:
        if embedded is not None:
            embedded[0].stop.set()
            embedded[1].join(timeout=60)


def _reuse_port_socket(host: str, port: int):
    import socket

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def worker(
    max_jobs: Annotated[int | None, typer.Option(help="Exit after this many jobs.")] = None,
    idle_exit: Annotated[bool, typer.Option(help="Exit when the queue is empty.")] = False,
    kinds: Annotated[
        str | None,
        typer.Option(help="Job kinds to claim, comma-separated (default: CROSSMODAL_JOB_KINDS, else every kind)."),
    ] = None,
) -> None:
    """Claim and run queued jobs (each in a child process) until stopped; scale out by running more."""
    import signal

    from app.jobs.worker import Worker

    settings = setup()
    if kinds is not None:
        settings = settings.model_copy(update={"job_kinds": kinds})
    try:
        sf = session_factory(settings)
        job_worker = Worker(settings, sf)
    except USER_ERRORS as e:
        raise fail(e) from e
    signal.signal(signal.SIGTERM, lambda *_: job_worker.stop.set())  # finish up: the job is requeued
    try:
        ran = job_worker.run(max_jobs=max_jobs, idle_exit=idle_exit)
    except KeyboardInterrupt:
        job_worker.stop.set()
        ran = 0
    typer.echo(f"worker {job_worker.worker_id} ran {ran} job(s)")


def register(app: typer.Typer) -> None:
    for command in (serve, worker):
        app.command()(command)
