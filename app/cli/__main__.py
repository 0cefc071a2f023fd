"""``python -m app.cli`` (what ``torchrun ... -m app.cli embed`` runs)."""

from app.cli import app

app()
