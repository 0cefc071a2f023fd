"""Model spec strings: every model the service touches is named by one.

    open_clip:ARCH/TAG            open_clip architecture + pretrained tag (hub download once)
    open_clip:ARCH@/path/ckpt.pt  architecture + a local checkpoint (open_clip or our format)
    open_clip:ARCH/TAG@/path.pt   same, with the tag's preprocessing and no download
    local-dir:/path               an exported folder (ours, or open_clip's hf-hub layout)
    builtin:lit-mini[@/path.pt]   the offline default, optionally with our fine-tuned weights
    builtin:lit-mini-spp[@/path.pt]  the same towers, image features pooled over a spatial pyramid
    test:tiny[@/path.pt]          a tiny random CLIP for fast unit tests

Specs are stored in the DB and passed on the CLI, so loading is a pure function of the string
(:func:`crossmodal_kernel.loading.load_model`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

ACCEPTED_FORMS = (
    "open_clip:ARCH/TAG, open_clip:ARCH@/path/ckpt.pt, open_clip:ARCH/TAG@/path/ckpt.pt, "
    "local-dir:/path, builtin:lit-mini[@/path/ckpt.pt], builtin:lit-mini-spp[@/path/ckpt.pt], "
    "test:tiny[@/path/ckpt.pt]"
)
OFFLINE_OPTIONS = (
    "`builtin:lit-mini` (packaged with the project), `local-dir:/path` (an exported model folder), "
    "`open_clip:ARCH@/path/ckpt.pt` (a local checkpoint)"
)
BUILTINS = ("lit-mini", "lit-mini-spp")
TEST_MODELS = ("tiny",)


@dataclass(frozen=True)
class ModelSpec:
    kind: str  # "open_clip" | "local-dir" | "builtin" | "test"
    name: str  # arch name / builtin name / dir path
    pretrained: str | None = None
    checkpoint: str | None = None

    def __str__(self) -> str:
        text = f"{self.kind}:{self.name}"
        if self.pretrained:
            text += f"/{self.pretrained}"
        if self.checkpoint:
            text += f"@{self.checkpoint}"
        return text

    def with_checkpoint(self, path: str | Path | None) -> ModelSpec:
        """The same base with other weights: how a fine-tuned model is named."""
        return replace(self, checkpoint=str(path) if path is not None else None)


def parse_spec(spec: str) -> ModelSpec:
    """Parse a spec string; ValueError names the accepted forms when it is malformed."""

    def bad(why: str) -> ValueError:
        return ValueError(f"invalid model spec {spec!r}: {why}. Accepted forms: {ACCEPTED_FORMS}")

    if not isinstance(spec, str) or ":" not in spec:
        raise bad("expected KIND:NAME")
    kind, rest = spec.strip().split(":", 1)
    if kind == "local-dir":
        if not rest:
            raise bad("empty folder path")
        return ModelSpec("local-dir", rest)  # a path may hold '@' or '/', so no suffixes here
    if kind not in ("open_clip", "builtin", "test"):
        raise bad(f"unknown kind {kind!r}")
    head, at, checkpoint = rest.partition("@")
    if at and not checkpoint:
        raise bad("empty checkpoint path after '@'")
    name, slash, tag = head.partition("/")
    if not name or (slash and not tag):
        raise bad("empty name or tag")
    if kind == "open_clip":
        if not tag and not checkpoint:
            raise bad("an open_clip architecture needs a pretrained tag (ARCH/TAG) or a checkpoint (ARCH@/path)")
        return ModelSpec(kind, name, tag or None, checkpoint or None)
    known = BUILTINS if kind == "builtin" else TEST_MODELS
    if slash:
        raise bad(f"{kind} models take no pretrained tag")
    if name not in known:
        raise bad(f"unknown {kind} model {name!r} (known: {', '.join(known)})")
    return ModelSpec(kind, name, None, checkpoint or None)
