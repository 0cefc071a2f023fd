"""The ``crossmodal`` command line: one Typer app, its commands in modules by what they work on."""

from __future__ import annotations

import typer

from app.runtime import apply_runtime_defaults

apply_runtime_defaults()  # before any command imports torch or faiss

app = typer.Typer(help="crossmodal: search images and texts against each other.", no_args_is_help=True)

# ruff: noqa: E402
from app.cli import data, datasets, demo, keys, models, service  # register their commands

data.register(app)
models.register(app)
service.register(app)
demo.register(app)
keys.register(app)
datasets.register(app)

__all__ = ["app"]
