"""Request and response bodies of the admin API (``/v1/admin``), apart from the ORM rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.values import IdNumber


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class JobPublic(_Out):
    id: int
    kind: str
    status: str = Field(..., description="queued, running, succeeded, failed or cancelled.")
    params: dict[str, Any]
    progress: float = Field(..., description="Fraction done, 0 to 1.")
    message: str | None
    details: dict[str, Any] | None = Field(
        None,
        description="stage, done, total, unit, rate (per second) and eta_s of the current stage; a fine-tune's "
        "`series`: `train` rows [step, loss, lr] and `val` (the validation metrics at each evaluation).",
    )
    result: dict[str, Any] | None
    error: str | None
    log: list[str] | None = Field(None, description="The last lines the job logged.")
    attempts: int
    max_attempts: int
    worker_id: str | None
    created_by: str | None
    cancel_requested_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int


class ModelPublic(_Out):
    id: int
    name: str | None
    spec: str
    checkpoint_path: str | None
    parent_id: int | None
    status: str = Field(..., description="candidate, active or retired.")
    eval_report: dict[str, Any] | None = Field(
        None, description="`evaluations` by dataset, `val` from fine-tuning, `promotion`: the last decision."
    )
    calibration: dict[str, Any] | None = Field(
        None,
        description="Its relevance calibration: `status` (fitted or unavailable), the evaluation set it was fitted on "
        "(`dataset`, `split`, `fingerprint`), each direction's map and fit figures, and `reasons` for those without "
        "one (docs/api.md: Relevance).",
    )
    created_at: datetime
    promoted_at: datetime | None


class ModelsPublic(BaseModel):
    data: list[ModelPublic]
    count: int
    active_id: int | None = Field(None, description="The model serving now.")
    rollback_target_id: int | None = Field(
        None, description="The model `POST /rollback` without `to_model_id` flips to (null: none is servable)."
    )


class IndexPublic(_Out):
    id: int
    model_id: int
    modality: str
    path: str
    factory: str
    kind: str = Field(
        ...,
        description="The ladder rung: flat, hnsw, hnsw_pca, hnsw_qa, hnsw_split, hnsw_flat, ivf_flat, ivf_fs_refine, "
        "ivf_sq8 or ivf_pq.",
    )
    dim: int
    ntotal: int
    status: str
    params: dict[str, Any] | None
    stats: dict[str, Any] | None = Field(
        None,
        description="Measured recall@10 on the modality served (`recall_at_10`) and on both (`recall_by_query`), "
        "QPS single and batch, the recall-QPS curve, build time, and every ladder rung measured (`ladder`).",
    )
    created_at: datetime


class IndexesPublic(BaseModel):
    data: list[IndexPublic]
    count: int


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class EvaluateRequest(_Request):
    dataset: str = Field("db", description="`db`, or a manifest or synthetic dataset folder under an allowed root.")
    split: str | None = "test"


class PromoteRequest(EvaluateRequest):
    force: bool = Field(False, description="Promote even if the candidate does not beat the active model.")
    metric: str | None = Field(None, description="Default: `CROSSMODAL_PROMOTION_METRIC`.")


class RollbackRequest(_Request):
    to_model_id: IdNumber | None = Field(None, description="Default: the model that was active before this one.")


class RollbackResponse(BaseModel):
    previous: ModelPublic
    active: ModelPublic


class DeleteItemsRequest(_Request):
    ids: list[IdNumber] = Field(default_factory=list, max_length=100_000)
    external_ids: list[str] = Field(default_factory=list, max_length=100_000)


class DeletedItems(BaseModel):
    deleted: list[int]


class KeyPublic(_Out):
    id: int
    name: str
    prefix: str = Field(..., description="Identifies the key; the secret itself is never shown again.")
    role: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


class KeysPublic(BaseModel):
    data: list[KeyPublic]
    count: int


class KeyCreate(_Request):
    name: str = Field(..., min_length=1, max_length=255, description="Who or what uses the key.")
    role: Literal["search", "admin"] = "search"


class KeyCreated(KeyPublic):
    key: str = Field(..., description="The key: shown in this response only, stored as a hash.")
