"""Service settings: one pydantic-settings class, read from ``CROSSMODAL_*`` env vars.

The configuration table in docs/configuration.md is generated from this class
(``crossmodal config-table``) and a test keeps the two in step.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal, TypedDict

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
        "builtin:lit-mini-spp",
        description="Model used when the database has no active model yet (see the model specs).",
    )
    device: str = Field("auto", description="`auto` (CUDA when present), `cpu` or `cuda[:N]`.")
    runtime: Literal["auto", "torch", "onnx", "onnx-int8"] = Field(
        "auto",
        description="What runs the model's towers: `torch` (PyTorch eager), `onnx` (ONNX Runtime: graphs exported on "
        "a model version's first load, cached beside its checkpoint, checked against PyTorch; a failed export falls "
        "back to PyTorch with a `/readyz` warning), `auto` (ONNX Runtime on CPU, and on CUDA where onnxruntime-gpu "
        "is installed; else PyTorch), or `onnx-int8` (quantised towers, only if their measured R@1 on "
        "`CROSSMODAL_INT8_EVAL_SET` drops by at most 0.5 points). docs/benchmarks.md (Encoding runtimes).",
    )
    int8_eval_set: Path | None = Field(
        None,
        description="The evaluation set (a manifest, or a synthetic dataset folder) on which `onnx-int8` must "
        "keep R@1 before it serves; without one it is refused.",
    )
    host: str = Field("127.0.0.1", description="Address `crossmodal serve` binds to.")
    port: int = Field(8000, ge=1, le=65535, description="Port `crossmodal serve` binds to.")
    reuse_port: bool = Field(
        False,
        description="Bind with SO_REUSEPORT, so that several `crossmodal serve` processes (containers on the "
        "host network) share one port and Linux spreads connections over them.",
    )
    keep_alive_seconds: int = Field(
        75,
        ge=1,
        description="How long `crossmodal serve` keeps an idle keep-alive connection open. Longer than the idle "
        "expiry of the clients and proxies in front (httpx 5 s, aiohttp 15 s, load balancers 60 s), so that they "
        "close idle connections first: a server closing one just as a client reuses it resets that request.",
    )
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
    max_query_parts: int = Field(
        16,
        ge=1,
        le=1000,
        description="Most parts (texts, images, items) one composite query (`/v1/search/composite`) may combine.",
    )
    batching: bool = Field(
        True,
        description="Encode and search concurrent queries in micro-batches (one forward pass, one matrix product).",
    )
    batch_window_ms: float = Field(
        2.0,
        ge=0,
        le=100,
        description="Longest a forming batch waits for more queries; it waits only while other searches are on "
        "their way, so a lone query never waits.",
    )
    batch_max_size: int = Field(32, ge=1, le=1024, description="Most queries in one micro-batch.")
    gil_switch_ms: float = Field(
        0.5,
        gt=0,
        le=100,
        description="Python's thread switch interval in the API process (CPython's default is 5): lower hands the "
        "GIL back to the encoding thread sooner between its many small operations while request threads run.",
    )
    query_cache_size: int = Field(
        4096, ge=0, description="Text query vectors kept (LRU, keyed by model and text); 0 turns the cache off."
    )
    filter_id_selector_limit: int = Field(
        20_000,
        ge=0,
        description="A metadata filter matching at most this many items restricts the FAISS search to their ids; "
        "a broader one is checked on overfetched candidates instead.",
    )
    search_mode: Literal["vector", "lexical", "hybrid"] = Field(
        "hybrid",
        description="How a text search ranks when its request names no `mode`: `vector` (embedding similarity), "
        "`lexical` (full-text match on text, metadata values and file name) or `hybrid` (both lists fused). "
        "Image queries always rank by vector. docs/benchmarks.md (Hybrid search) has the measurement.",
    )
    hybrid_fusion: Literal["rrf", "relative"] = Field(
        "rrf",
        description="How hybrid search fuses the vector and lexical lists: `rrf` (reciprocal rank fusion) or "
        "`relative` (each list's scores min-max scaled, then a weighted sum).",
    )
    hybrid_rrf_k: float = Field(
        1.0,
        ge=0,
        description="Reciprocal rank fusion's constant k: a hit adds weight / (k + rank) per list. 1 is the smallest "
        "k at which a hit second in both lists outranks one first in a single list; on the emoji benchmark k = 0 to "
        "3 tie and the customary 60 loses up to 0.25 of R@10 (docs/benchmarks.md: Hybrid search).",
    )
    hybrid_vector_weight: float = Field(
        0.5,
        ge=0,
        le=1,
        description="The vector list's weight in hybrid fusion, before the relevance swing; the lexical list gets "
        "1 minus it.",
    )
    hybrid_relevance_swing: float = Field(
        0.2,
        ge=0,
        le=0.5,
        description="How far one query's vector weight moves with the calibrated relevance r of the vector list's "
        "first hit: weight = hybrid_vector_weight + swing * (2r - 1), within [0, 1], so the list the model is unsure "
        "of counts less. 0, or a model with no calibration, keeps the weight fixed. On the emoji benchmark 0.2 was as "
        "good or better than fixed weights in every cell (docs/benchmarks.md: Hybrid search).",
    )
    hybrid_window: int = Field(
        100,
        ge=1,
        le=2048,
        description="How deep hybrid search reads each list (filtered, ranked) before fusing them: its results are "
        "the fused union of the two top-window lists, so pages are stable and end after at most twice this.",
    )
    index_refresh_seconds: float = Field(
        5.0,
        ge=0,
        description="How often an API process checks the database for a newly published index.",
    )
    index_kind: str = Field(
        "auto",
        description="FAISS index kind: `auto` (every rung of the ladder that fits the memory budget is built, "
        "tuned on the other modality's vectors and timed; the fastest single query that reaches the target recall "
        "is published), or one of `flat`, `hnsw` (HNSW on SQ8 codes, re-ranked on the floats), `hnsw_pca` (the "
        "walk on SQ8 codes of the top d/2 principal components, re-ranked on the floats), `hnsw_qa` (that plus "
        "query-aware edges), `hnsw_split` (that cut into one graph a core, searched side by side: faster single "
        "queries, about half the batch throughput), `hnsw_flat` (HNSW on float32 vectors), `ivf_flat`, "
        "`ivf_fs_refine`, `ivf_sq8`, `ivf_pq`.",
    )
    index_ladder: str = Field(
        "",
        description="Comma-separated kinds an `auto` index measures (default: flat, ivf_flat, ivf_fs_refine, "
        "hnsw, hnsw_pca, hnsw_qa; IVF-SQ8 and IVF-PQ when IVF-Flat does not fit). Fewer rungs build faster; add "
        "hnsw_split where single-query latency on idle cores matters more than throughput under load.",
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
    threads: int = Field(
        40, ge=1, description="Threads per API process for encoding, search and database work (FastAPI's pool)."
    )
    max_inflight: int = Field(
        64,
        ge=1,
        description="Requests one API process works on at once; more get a fast 429 with `Retry-After` "
        "(probes and metrics are never refused).",
    )
    db_pool_timeout_seconds: float = Field(
        5.0, gt=0, description="How long a request waits for a database connection before a 503."
    )
    search_auth: Literal["open", "key"] = Field(
        "open",
        description="`open`: search needs no key; `key`: search needs an API key (role `search` or `admin`). "
        "The admin API always needs an `admin` key.",
    )
    allowed_roots: str = Field(
        "",
        description="Folders (separated by `:`) that admin jobs may read sources, manifests and evaluation "
        "sets from; the data dir is always allowed. A request for anything else is a 403.",
    )
    job_heartbeat_seconds: float = Field(2.0, gt=0, description="How often a worker records that its job is alive.")
    job_stale_seconds: float = Field(
        30.0, gt=0, description="A running job whose heartbeat is older than this is presumed dead and requeued."
    )
    job_max_attempts: int = Field(
        3, ge=1, description="Claims a job gets (a dead worker's job is resumed) before it fails for good."
    )
    job_poll_seconds: float = Field(1.0, gt=0, description="How often an idle worker looks for a queued job.")
    job_start: Literal["fork", "exec"] = Field(
        "fork",
        description="How a worker starts a job's process: `fork` from a server process that imported torch and the "
        "handlers once (milliseconds a job), or `exec` a fresh `python -m app.jobs.child` (seconds of imports a job).",
    )
    job_kinds: str = Field(
        "",
        description="The job kinds a worker claims (comma-separated), e.g. `finetune,promote` for a worker on a GPU "
        "machine and `ingest,embed,reindex` for others; empty: every kind. Its fork server imports only those kinds' "
        "handlers ahead of jobs.",
    )
    promotion_metric: str = Field(
        "t2i_R@1", description="The evaluation metric a candidate must beat the active model on to be promoted."
    )
    calibration_method: Literal["isotonic", "platt"] = Field(
        "platt",
        description="How a model's relevance calibration, fitted on its evaluation pairs, maps a hit's cosine (less a "
        "fitted share of its query's best cosine) to P(relevant): `platt` (a logistic curve) or `isotonic` (a "
        "monotone step function). docs/benchmarks.md (Calibrated relevance on real data) has the measurement.",
    )
    fetch_timeout_seconds: float = Field(
        10.0, gt=0, description="Longest a fetch of an image by URL (ingest jobs) may take, start to end."
    )
    fetch_allow_private: bool = Field(
        False,
        description="Let URL fetches reach private and loopback addresses (closed networks and tests only: "
        "otherwise anyone who may submit a URL can probe the service's own network).",
    )
    clip_index_name: str = Field(
        "crossmodal",
        min_length=1,
        description="The one index name the clip-retrieval compatible endpoints (`/indices-list`, `/knn-service`, "
        "`/metadata`) offer; its `modality` picks the image or the text index. Another name is a 404.",
    )
    clip_image_url_fetch: bool = Field(
        False,
        description="Let `/knn-service` fetch an `image_url` query itself (off: a 403). Fetches are http(s) only, "
        "to public addresses unless `CROSSMODAL_FETCH_ALLOW_PRIVATE`, within `CROSSMODAL_FETCH_TIMEOUT_SECONDS` and "
        "`CROSSMODAL_MAX_UPLOAD_BYTES`. URLs of this service's own item images are resolved without a fetch.",
    )
    cors_allow_origins: str = Field(
        "",
        description="Origins (comma-separated, or `*`) whose web pages may call the API from a browser (CORS), "
        "e.g. clip-retrieval's front end served elsewhere; empty: no CORS headers.",
    )
    keep_generations: int = Field(
        3,
        ge=1,
        description="Model generations (the active one and those before it) whose embeddings and indexes stay "
        "on disk for an instant rollback; older ones are deleted after a promotion.",
    )

    @property
    def roots(self) -> tuple[Path, ...]:
        """The folders admin jobs may read from: the data dir and ``allowed_roots``, resolved."""
        extra = [Path(p).expanduser() for p in self.allowed_roots.split(":") if p.strip()]
        return tuple(p.resolve() for p in (self.data_dir, *extra))

    @field_validator("index_kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        from index.factory import KINDS

        if v != "auto" and v not in KINDS:
            raise ValueError(f"index_kind must be 'auto' or one of {KINDS}, got {v!r}")
        return v

    @field_validator("index_ladder")
    @classmethod
    def _ladder(cls, v: str) -> str:
        from index.factory import KINDS

        unknown = [k for k in comma_list(v) if k not in KINDS]
        if unknown:
            raise ValueError(f"index_ladder: unknown kinds {unknown}; expected some of {KINDS}")
        return ",".join(comma_list(v))

    @field_validator("log_level")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.upper()

    @property
    def claimed_kinds(self) -> list[str] | None:
        """``job_kinds`` as a list; None when empty (every kind)."""
        return comma_list(self.job_kinds) or None

    @property
    def db_pool_size(self) -> int:
        """Connections per process: one per thread, plus the refresher, event streams and a margin."""
        return self.threads + 8

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'crossmodal.db').resolve()}"


def comma_list(value: str) -> list[str]:
    """The entries of a comma-separated setting, stripped, empty ones left out (``" a, ,b"``: ``["a", "b"]``)."""
    return [part.strip() for part in value.split(",") if part.strip()]


def settings_env(settings: Settings) -> dict[str, str]:
    """``settings`` as ``CROSSMODAL_*`` environment variables: how a child process gets the same ones."""
    env = {}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"CROSSMODAL_{name.upper()}"] = str(value)
    return env


class UvicornOptions(TypedDict):
    """What :func:`uvicorn_options` passes to ``uvicorn.run`` (typed, so each keyword is checked)."""

    timeout_keep_alive: int


def uvicorn_options(settings: Settings) -> UvicornOptions:
    """uvicorn's keyword arguments from ``settings`` (besides where to bind): the same in `crossmodal serve`
    and in the tests that serve on a real socket."""
    return {"timeout_keep_alive": settings.keep_alive_seconds}


@lru_cache
def get_settings() -> Settings:
    return Settings()


def settings_markdown_table() -> str:
    """The configuration table of docs/configuration.md, generated from :class:`Settings`."""
    rows = ["| variable | default | description |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "(unset)" if default is None else f"`{default}`"
        rows.append(f"| `CROSSMODAL_{name.upper()}` | {shown} | {field.description or ''} |")
    return "\n".join(rows)
