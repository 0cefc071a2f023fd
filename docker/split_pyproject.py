"""Docker build helper: split pyproject.toml into what the dependency layers need.

    python3 split_pyproject.py PYPROJECT OUTDIR [--gpu]

writes OUTDIR/requirements.txt (the dependencies minus torch/torchvision, which get their own
layer; with --gpu also minus faiss-cpu, plus the `gpu` extra), OUTDIR/requirements-dev.txt,
and OUTDIR/project/: a pyproject.toml with only what an editable install needs, and an empty
package for each top-level package. Installing that stub (-e) puts the import mapping and the
`crossmodal` script into the venv; the real sources are copied over it later, so editing code,
or tool settings in pyproject.toml, does not change the venv layer.
"""

import re
import sys
import tomllib
from pathlib import Path

src, out = Path(sys.argv[1]), Path(sys.argv[2])
gpu = "--gpu" in sys.argv[3:]
doc = tomllib.loads(src.read_text())
project = doc["project"]


def name(req: str) -> str:
    return re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].strip().lower().replace("_", "-")


skip = {"torch", "torchvision"} | ({"faiss-cpu"} if gpu else set())
reqs = [r for r in project.get("dependencies", []) if name(r) not in skip]
if gpu:
    reqs += project.get("optional-dependencies", {}).get("gpu", [])
out.mkdir(parents=True, exist_ok=True)
(out / "requirements.txt").write_text("".join(r + "\n" for r in reqs))
(out / "requirements-dev.txt").write_text(
    "".join(r + "\n" for r in project.get("optional-dependencies", {}).get("dev", []))
)

stub = out / "project"
stub.mkdir(exist_ok=True)
setuptools = doc.get("tool", {}).get("setuptools", {})
include = setuptools.get("packages", {}).get("find", {}).get("include", [])
lines = [
    "[build-system]",
    f"requires = {doc['build-system']['requires']!r}".replace("'", '"'),
    f'build-backend = "{doc["build-system"]["build-backend"]}"',
    "[project]",
    f'name = "{project["name"]}"',
    f'version = "{project["version"]}"',
    "[project.scripts]",
    *(f'{k} = "{v}"' for k, v in project.get("scripts", {}).items()),
    "[tool.setuptools.packages.find]",
    f"include = {include!r}".replace("'", '"'),
]
(stub / "pyproject.toml").write_text("\n".join(lines) + "\n")
for pattern in include:
    pkg = pattern.rstrip("*").rstrip(".")
    if pkg and "." not in pkg:
        (stub / pkg).mkdir(exist_ok=True)
        (stub / pkg / "__init__.py").write_text("")
print((out / "requirements.txt").read_text(), (stub / "pyproject.toml").read_text(), sep="\n")
