"""A real browser: Debian's Chromium driven headless by playwright (never `playwright install`)."""

from __future__ import annotations

import os
from pathlib import Path

CHROMIUM = os.environ.get("CROSSMODAL_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("CROSSMODAL_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
