"""The real emoji demo, end to end, checked: ``python benchmarks/verify_demo_emoji.py [--houses google]``.

Runs ``crossmodal demo --data emoji --no-serve`` in a fresh data folder (npm and its registry, or a
warm package cache, give the drawings), then asks the running app the demo's example queries and
fails unless "a cat" finds a cat at rank 1 among the indexed house's drawings. It takes minutes on
two cores (real encoding of every drawing), which is why it is a script and not a test; the
suite's ``tests/app/test_demo_emoji.py`` checks the same plumbing on a fake 17-concept set.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.cli import app as cli
from app.cli.demo import EMOJI_QUERIES
from app.config import comma_list, get_settings
from app.main import create_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--houses", default="google", help="houses to index (the demo's --houses)")
    parser.add_argument("--data-dir", type=Path, help="data folder (default: a new temporary one)")
    args = parser.parse_args(argv)
    # Logging to this process's stderr before the CLI configures it onto the CliRunner's stream, which closes.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data = args.data_dir or Path(tempfile.mkdtemp(prefix="crossmodal-demo-"))
    os.environ.update(CROSSMODAL_DATA_DIR=str(data), CROSSMODAL_INDEX_REFRESH_SECONDS="0")
    get_settings.cache_clear()
    started = time.perf_counter()
    result = CliRunner().invoke(cli, ["demo", "--data", "emoji", "--houses", args.houses, "--no-serve"])
    print(result.output)
    if result.exit_code != 0:
        print(f"FAILED: the demo exited with {result.exit_code}: {result.exception!r}", file=sys.stderr)
        return 1
    print(f"demo took {time.perf_counter() - started:.0f} s (data in {data})")
    houses = set(comma_list(args.houses))
    with TestClient(create_app(get_settings())) as client:
        tops = {}
        for query in EMOJI_QUERIES:
            resp = client.post("/v1/search/text", json={"query": query, "target": "image", "k": 5})
            resp.raise_for_status()
            hits = resp.json()["data"]
            tops[query] = hits
            print(f"{query!r}: " + " | ".join(f"{h['text']} ({h['metadata']['house']})" for h in hits))
    cat = tops[EMOJI_QUERIES[0]]
    problems = []
    if len(cat) != 5 or any(h["metadata"]["house"] not in houses for h in cat):
        problems.append(f"'a cat' should give 5 drawings of {sorted(houses)}")
    if not cat or "cat" not in cat[0]["text"].split():
        problems.append(f"'a cat' found {cat[0]['text'] if cat else 'nothing'!r} at rank 1, not a cat")
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    print("OK" if not problems else "FAILED")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
