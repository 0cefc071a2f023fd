"""A real browser: Debian's Chromium driven headless by playwright (never `playwright install`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("CROSSMODAL_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def screenshot(page: Any, name: str) -> Path | None:
    """A full-page screenshot in ``$CROSSMODAL_SCREENSHOTS`` (a folder) when that is set, else none: a person
    looks at these (the command is in docs/operations.md); git ignores test-artifacts/, where they usually go."""
    folder = os.environ.get("CROSSMODAL_SCREENSHOTS")
    if not folder:
        return None
    path = Path(folder) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path
