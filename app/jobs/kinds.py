"""The job kinds: what each takes (a strict pydantic model: an unknown key is an error) and what runs it.

A handler is ``handler(ctx: JobContext, params: dict) -> dict`` (the job's result). Handlers are
imported only in the child process that runs them. ``CROSSMODAL_JOB_PLUGINS`` (module names,
comma-separated) may register more kinds; the test suite uses it for kinds of its own.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema, WithJsonSchema

from app.config import comma_list
from app.values import IdNumber, WholeNumber
from training.config import DataConfig, TrainConfig

Handler = Callable[[Any, dict], dict | None]


class _Params(BaseModel):
    # Strict: `0` is not `false`, `"3"` is not 3; integers go through WholeNumber (3.0 is 3).
    model_config = ConfigDict(extra="forbid", strict=True)


class UrlItem(_Params):
    url: str = Field(
        ...,
        pattern=r"^[hH][tT][tT][pP][sS]?://[^\s/]+",
        max_length=2048,
        description="An http(s) image URL, fetched by the worker (public addresses only).",
    )
    text: str | None = Field(None, description="A caption for the image.")
    id: str | None = Field(None, description="The item's external id (default: derived from the URL and text).")
    metadata: dict[str, Any] | None = None


class IngestParams(_Params):
    # Exactly one of the two (the schema says so too: oneOf).
    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra={"oneOf": [{"required": ["source"]}, {"required": ["items"]}]}
    )
    kind: Literal["ingest"]
    source: SkipJsonSchema[None] | Annotated[str, Field(min_length=1)] = Field(
        None,
        description="A folder of images (+ .txt captions) or a .csv/.jsonl/.parquet manifest, under an allowed root.",
    )
    items: SkipJsonSchema[None] | Annotated[list[UrlItem], Field(min_length=1, max_length=100_000)] = Field(
        None, description="Images to fetch by URL."
    )

    @model_validator(mode="before")
    @classmethod
    def _one_source(cls, data: Any) -> Any:
        if isinstance(data, dict):
            given = [name for name in ("source", "items") if name in data]
            if len(given) != 1 or data[given[0]] is None:
                raise ValueError("give exactly one of `source` (a path) and `items` (URLs)")
        return data


class EmbedParams(_Params):
    kind: Literal["embed", "reindex"]
    model_id: IdNumber | None = Field(None, description="The model to embed for (default: the active one).")
    rebuild: bool = Field(False, description="Rebuild the indexes from scratch (compacts deleted items away).")


class JobTrainConfig(TrainConfig):
    """A fine-tune job's configuration: the YAML's, less `output_dir` (the service picks it), with
    `data` optional (no manifest: the database's items) and `model` defaulting to the active model."""

    model: str | None = None  # type: ignore[assignment]
    output_dir: SkipJsonSchema[Path] = Path("-")
    data: DataConfig = DataConfig()

    @classmethod
    def check(cls, raw: dict[str, Any]) -> None:
        """Validate as JSON, strictly: `"0.1"` is not a learning rate, `1` is not `true`."""
        if "output_dir" in raw:
            raise ValueError("output_dir is chosen by the service (the job's own folder); leave it out")
        cls.model_validate_json(json.dumps(raw), strict=True)


# A placeholder app.api.openapi swaps for a reference to JobTrainConfig's schema (pydantic would try to
# resolve a $ref here itself).
TRAIN_CONFIG_SCHEMA = {"type": "object", "x-crossmodal-schema": "JobTrainConfig"}


class FinetuneParams(_Params):
    kind: Literal["finetune"]
    config: Annotated[dict[str, Any], WithJsonSchema(TRAIN_CONFIG_SCHEMA)] = Field(
        default_factory=dict,
        description="The fine-tuning configuration, as in the YAML (`configs/finetune-demo.yaml`), validated the "
        "same way; `output_dir` is chosen by the service. Without `data.manifest` it trains on the database's "
        "items that have an image and a text. `model` defaults to the active model.",
    )
    nproc_per_node: WholeNumber = Field(1, ge=1, le=64, description="Processes under `torchrun` (1: no torchrun).")
    register_candidate: bool = Field(True, description="Record the result as a candidate model.")


class EvaluateParams(_Params):
    kind: Literal["evaluate"]
    model_id: IdNumber
    dataset: str = Field(
        "db",
        description="`db` (the database's held-out split, the same stable hash split the trainer uses), a "
        "manifest or a synthetic dataset folder, under an allowed root.",
    )
    split: str | None = Field("test", description="For a synthetic folder or a manifest with a `split` column.")


class PromoteParams(_Params):
    kind: Literal["promote"]
    model_id: IdNumber
    force: bool = Field(False, description="Promote even if the candidate does not beat the active model.")
    metric: str | None = Field(None, description="Default: `CROSSMODAL_PROMOTION_METRIC` (t2i_R@1).")
    dataset: str = Field("db", description="The evaluation set both models are measured on (see `evaluate`).")
    split: str | None = "test"


JobParams = Annotated[
    IngestParams | EmbedParams | FinetuneParams | EvaluateParams | PromoteParams, Field(discriminator="kind")
]

_HANDLERS: dict[str, str | Handler] = {
    "ingest": "app.jobs.handlers.ingest:run",
    "embed": "app.jobs.handlers.embed:run",
    "reindex": "app.jobs.handlers.embed:run",
    "finetune": "app.jobs.handlers.finetune:run",
    "evaluate": "app.jobs.handlers.evaluate:run",
    "promote": "app.jobs.handlers.promote:run",
}


def register(kind: str, handler: Handler) -> None:
    """Add a job kind (from a ``CROSSMODAL_JOB_PLUGINS`` module)."""
    _HANDLERS[kind] = handler


def handler_for(kind: str) -> Handler:
    _load_plugins()
    target = _HANDLERS.get(kind)
    if target is None:
        raise LookupError(f"unknown job kind {kind!r}; known: {', '.join(sorted(_HANDLERS))}")
    if isinstance(target, str):
        module, name = target.split(":")
        target = getattr(importlib.import_module(module), name)
    return target


def builtin_handler_modules(kinds: Collection[str] | None = None) -> list[str]:
    """The modules of the built-in handlers of ``kinds`` (None: every kind): what a worker's fork server
    imports ahead of jobs."""
    chosen = _HANDLERS if kinds is None else {k: v for k, v in _HANDLERS.items() if k in kinds}
    return sorted({target.split(":")[0] for target in chosen.values() if isinstance(target, str)})


def check_kinds(kinds: Collection[str]) -> None:
    """Raise ``ValueError`` naming any of ``kinds`` that no handler runs (a worker would wait forever)."""
    unknown = sorted(set(kinds) - set(known_kinds()))
    if unknown:
        raise ValueError(f"unknown job kinds {unknown}; known: {', '.join(known_kinds())}")


def known_kinds() -> list[str]:
    _load_plugins()
    return sorted(_HANDLERS)


def _load_plugins() -> None:
    for name in comma_list(os.environ.get("CROSSMODAL_JOB_PLUGINS", "")):
        importlib.import_module(name)
