"""What the API process imports at start: what it serves needs torch, FAISS and the database, not the
training stack. torchvision (it pulls in torch._dynamo), scikit-learn, open_clip and transformers cost a
`crossmodal serve` process, and every replica, 3 s of its start on a 2-core machine; the modules that
use them import them where they are used."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torchvision", "sklearn", "open_clip", "transformers", "torch._dynamo")


def test_the_api_app_imports_no_training_library():
    script = f"import json, sys, app.main; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300)
    assert json.loads(done.stdout.splitlines()[-1]) == []
