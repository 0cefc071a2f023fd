"""ASGI entry point for process managers: ``uvicorn app.asgi:app`` (settings from the environment)."""

from app.runtime import apply_runtime_defaults

apply_runtime_defaults()

from app.main import create_app  # noqa: E402  (after the OpenMP defaults)

app = create_app()
