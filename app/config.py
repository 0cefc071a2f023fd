"""Service settings: one pydantic-settings class, read from ``CROSSMODAL_*`` env vars.

The README's configuration table is generated from this class
(``crossmodal config-table``) and a test keeps the two in step.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CROSSMODAL_", env_file=".env", extra="ignore")

    data_dir: Path = Field(
        Path("./data"),
        description="Root for models, embeddings, indexes and the default SQLite file.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL; defaults to a SQLite file `crossmodal.db` in the data dir. "
        "PostgreSQL: `postgresql+psycopg://user@host/db`.",
    )
    model_spec: str = Field(
        "builtin:lit-mini",
        description="Model used when the database has no active model yet (see the model specs).",
    )
    device: str = Field("auto", description="`auto` (CUDA when present), `cpu` or `cuda[:N]`.")
    host: str = Field("127.0.0.1", description="Address `crossmodal serve` binds to.")
    port: int = Field(8000, ge=1, le=65535, description="Port `crossmodal serve` binds to.")
    batch_size: int = Field(64, ge=1, description="Encoding batch size for ingestion.")
    num_workers: int = Field(2, ge=0, description="DataLoader worker processes that decode images during ingestion.")
    max_upload_bytes: int = Field(
        20_000_000, ge=1, description="Largest accepted query image, in bytes (after base64 decoding)."
    )
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="Largest accepted query image, in pixels (decompression-bomb guard)."
    )
    max_query_chars: int = Field(1000, ge=1, description="Longest accepted text query, in characters.")
    max_k: int = Field(1000, ge=1, description="Largest `k` a search may ask for.")
    index_refresh_seconds: float = Field(
        5.0,
        ge=0,
        description="How often an API process checks the database for a newly published index.",
    )
    index_kind: str = Field(
        "auto",
        description="FAISS index kind: `auto` (chosen from N, d and the memory budget), `flat`, `hnsw`, "
        "`ivf_flat`, `ivf_sq8` or `ivf_pq`.",
    )
    index_memory_budget_bytes: int = Field(
        4 * 2**30, ge=1, description="Memory an automatically chosen index may use, per modality."
    )
    index_target_recall: float = Field(
        0.95, gt=0.0, le=1.0, description="Recall@10 an approximate index is tuned to reach, measured."
    )
    index_compact_fraction: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="Rebuild an index once this share of its vectors are deleted items (until then "
        "deletes are tombstones filtered at query time, and new items are added without a rebuild).",
    )
    index_mmap: bool = Field(True, description="Memory-map IVF inverted lists when serving (bigger-than-RAM).")
    log_level: str = Field("INFO", description="Python logging level.")
    metrics_enabled: bool = Field(
        True, description="Serve Prometheus metrics at `/metrics` (requests, latency, search stages, index sizes)."
    )

    @field_validator("index_kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        from index.factory import KINDS

        if v != "auto" and v not in KINDS:
            raise ValueError(f"index_kind must be 'auto' or one of {KINDS}, got {v!r}")
        return v

    @field_validator("log_level")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.upper()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'crossmodal.db').resolve()}"


@lru_cache
def get_settings() -> Settings:
    return Settings()


def settings_markdown_table() -> str:
    """The README configuration table, generated from :class:`Settings`."""
    rows = ["| variable | default | description |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "(unset)" if default is None else f"`{default}`"
        rows.append(f"| `CROSSMODAL_{name.upper()}` | {shown} | {field.description or ''} |")
    return "\n".join(rows)
