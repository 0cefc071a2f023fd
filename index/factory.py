"""Pick a FAISS index for a corpus: pure functions from ``(n, d, memory budget)`` to an :class:`IndexPlan`.

Every plan is an ``index_factory`` string wrapped in ``IDMap2`` (labels are DB
ids, and ``reconstruct(id)`` works), with the inner-product metric (vectors are
L2-normalised, so IP is cosine). The choice walks down a ladder, stopping at
the first rung whose estimated memory fits the budget:

1. ``Flat`` (exact) while brute force is cheap: ``n * d <= EXACT_MAX_WORK``,
   i.e. 50k vectors at d=512, about 25M multiply-adds a query, a few ms on one
   core. No training, no tuning, recall 1.
2. ``HNSW32,SQ8,Refine(Flat)`` (CPU only) for ``n <= HNSW_MAX_N``: the best recall/speed
   trade-off in RAM. The graph walk compares 1-byte codes (a quarter of the memory traffic of
   float32, which is what a walk that visits tens of thousands of nodes is bound by) and the
   ``k * k_factor`` it returns are re-ranked on the full vectors; at 1M x 512 with text-like
   queries this recalled as much as ``HNSW32,Flat`` (kind ``hnsw_flat``) at the same efSearch,
   10-20% faster (docs/design.md, "HNSW walks 1-byte codes"). It costs ~300 extra bytes a
   vector for the graph and ``d`` for the codes,
   builds slowly (hours past a few million vectors), cannot be memory-mapped
   and has no GPU implementation. Caveat, measured (docs/benchmarks.md, index-real): on
   text->image queries, far from every image vector, HNSW's greedy search can miss the
   target recall at any efSearch where IVF reaches it, which is why an ``auto`` index
   measures every rung (:func:`ladder`, ``index.ladder``) instead of taking this one.
   The measured ladder walks its graphs on SQ8 codes of the top ``d/2`` principal components
   instead (``hnsw_pca``: comparisons half as dear, more candidates re-ranked), and also
   cuts the corpus into one such graph a core searched side by side (``hnsw_split``,
   ``index.partitioned``): docs/design.md, "The graph is walked on half the dimensions".
3. ``IVF{nlist},Flat``: exact distances inside the probed lists, ids in the
   lists, memory-mappable, GPU-capable.
4. ``IVF{nlist},SQ8``: 4x smaller codes (one byte a dimension), small recall loss.
5. ``OPQ{m},IVF{nlist},PQ{m}``: ``m`` bytes a vector (``m`` divides ``d``), the
   largest ``m`` that fits; OPQ rotates the space so the sub-vectors carry
   balanced variance, which PQ needs for good recall.

If nothing fits, the smallest PQ plan is returned and its reason says so.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

EXACT_MAX_WORK = 50_000 * 512  # n * d under which brute force is fast enough
HNSW_MAX_N = 5_000_000  # past this HNSW build time (and no mmap) outweighs its speed
HNSW_M = 32  # neighbours per node: the usual recall/memory sweet spot
MIN_POINTS_PER_CENTROID = 39  # FAISS k-means warns (and clusters badly) below this
TRAIN_POINTS_PER_CENTROID = 64
PQ_TRAIN_MIN = 1 << 16  # PQ learns 256 centroids per sub-space: give it 256 * 256 points
GPU_PQ_M = (1, 2, 3, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 96)  # GpuIndexIVFPQ code sizes
# Text queries on image graphs need the top end, where a factor of two is a factor of two in speed: half steps.
EF_SEARCH = (16, 32, 64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
HNSW_TRAIN_SAMPLE = 1 << 18  # SQ8 learns each dimension's range: a quarter-million vectors bound it well

# Bytes a vector beyond its code: IDMap2 keeps ``id_map`` (8 B) and a hash map id -> row
# (~48 B in libstdc++); measured 51 B/vector on faiss 1.15. IVF lists store an 8 B id each.
IDMAP2_BYTES = 56
IVF_ID_BYTES = 8

KINDS = (
    "flat",
    "hnsw",
    "hnsw_qa",
    "hnsw_pca",
    "hnsw_split",
    "hnsw_flat",
    "ivf_flat",
    "ivf_fs_refine",
    "ivf_sq8",
    "ivf_pq",
)
# Built on the CPU even when a GPU is there: FAISS has no GPU HNSW, fast-scan PQ or refine stage.
CPU_ONLY = frozenset({"hnsw", "hnsw_qa", "hnsw_pca", "hnsw_split", "hnsw_flat", "ivf_fs_refine"})
# Candidates a refine stage re-ranks per result, until the ladder measures better (index.ladder.K_FACTORS):
# 4-bit fast-scan PQ ranks coarsely, and re-ranking 64 k float16 vectors is cheap next to scanning lists.
REFINE_K_FACTOR = 64
# hnsw_split: the corpus in this many graphs (index.parts), one a core a single query is searched on;
# callers that know the machine pass ``parts=faiss.omp_get_max_threads()``.
SPLIT_PARTS = 2
GRAPH_REFINE_K_FACTOR = 2  # an HNSW walk on SQ8 codes orders its candidates almost right (index.ladder.GRAPH_K_FACTORS)
PCA_REFINE_K_FACTOR = 16  # a walk on half the dimensions orders them less well (index.ladder.PCA_K_FACTORS)
PCA_MIN_D = 64  # below this a walk on d/2 dimensions saves too little to lose their precision


def refine_k_factor(plan: IndexPlan) -> int:
    """The re-ranking depth a freshly built ``plan`` with a refine stage starts at."""
    if plan.search_param != "efSearch":
        return REFINE_K_FACTOR
    return PCA_REFINE_K_FACTOR if "PCA" in plan.factory else GRAPH_REFINE_K_FACTOR


def walk_dims(d: int) -> int:
    """Dimensions ``hnsw_pca`` / ``hnsw_split`` walk their graph in: the top ``d / 2`` principal components
    (d/4 lost more recall than it saved in ad-hoc probes; not yet swept by bench_index);
    all ``d`` below ``PCA_MIN_D``."""
    return d // 2 if d >= PCA_MIN_D and d % 2 == 0 else d


@dataclass(frozen=True)
class IndexPlan:
    kind: str  # one of KINDS
    factory: str  # for faiss.index_factory(d, factory, METRIC_INNER_PRODUCT)
    n: int
    d: int
    memory_bytes: int  # estimated resident size of the built index
    train_sample: int  # vectors to train on; 0 when the index needs no training
    search_param: str | None  # "nprobe", "efSearch", or None for exact search
    candidates: tuple[int, ...]  # values of search_param to try, ascending
    reason: str
    metric: str = "ip"
    parts: int = 1  # indexes the corpus is cut into, searched side by side (index.parts); 1 = one index


def ivf_nlist(n: int) -> int:
    """Inverted lists for ``n`` vectors: the smallest power of two >= 4 sqrt(n).

    FAISS's guideline is 4 sqrt(n)..16 sqrt(n); the low end keeps training and
    the coarse search cheap, a power of two keeps the numbers readable. Below
    ~25k vectors the k-means floor (39 points a centroid) wins instead.
    """
    nlist = 1 << max(0, math.ceil(math.log2(max(4 * math.sqrt(max(n, 1)), 1))))
    cap = max(1, n // MIN_POINTS_PER_CENTROID)
    while nlist > cap and nlist > 1:
        nlist //= 2
    return nlist


def pq_nbits(n: int) -> int:
    """8 bits a sub-quantizer (256 centroids) unless there are too few vectors to learn them."""
    if n >= 256 * MIN_POINTS_PER_CENTROID:
        return 8
    return max(4, int(math.log2(max(n, 1) / MIN_POINTS_PER_CENTROID)))


def pq_choices(d: int, gpu: bool = False) -> list[int]:
    """Sub-quantizer counts ``m`` for dimension ``d``, largest (most accurate) first.

    ``m`` divides ``d``; sub-vectors keep 2..32 dimensions (one byte cannot
    describe more than ~32 dimensions usefully), and at most 96 bytes a code.
    GPU IVFPQ supports only some code sizes.
    """
    ms = [m for m in range(min(d // 2, 96), 0, -1) if d % m == 0 and d // m <= 32]
    return [m for m in ms if m in GPU_PQ_M] if gpu else ms


def make_plan(
    kind: str, n: int, d: int, *, gpu: bool = False, m: int | None = None, parts: int = SPLIT_PARTS
) -> IndexPlan:
    """The plan for one ``kind`` (see ``KINDS``) sized for ``n`` vectors of dimension ``d``; ``parts``: the
    graphs ``hnsw_split`` cuts the corpus into (one a core it searches on)."""
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; expected one of {KINDS}")
    if n < 0 or d <= 0:
        raise ValueError(f"need n >= 0 and d > 0, got n={n}, d={d}")
    nlist = ivf_nlist(n)
    nprobe = tuple(1 << i for i in range(int(math.log2(min(nlist, 2048))) + 1))
    sample = min(n, TRAIN_POINTS_PER_CENTROID * nlist)
    param: str | None
    values: tuple[int, ...]
    if kind == "flat":
        factory, sample, param, values = "IDMap2,Flat", 0, None, ()
    elif kind == "hnsw":
        factory, param, values = f"IDMap2,HNSW{HNSW_M},SQ8,Refine(Flat)", "efSearch", EF_SEARCH
        sample = min(n, HNSW_TRAIN_SAMPLE)
    elif kind in ("hnsw_pca", "hnsw_qa", "hnsw_split"):
        # the walk on PCA codes; hnsw_qa: that graph plus query edges (index.query_aware); hnsw_split: one a core
        pca = f"PCA{walk_dims(d)}," if walk_dims(d) < d else ""
        factory, param, values = f"IDMap2,{pca}HNSW{HNSW_M},SQ8,Refine(Flat)", "efSearch", EF_SEARCH
        sample = min(n, HNSW_TRAIN_SAMPLE)
    elif kind == "hnsw_flat":  # the walk on float32 vectors: what ``hnsw`` was, kept to measure it against
        factory, sample, param, values = f"IDMap2,HNSW{HNSW_M},Flat", 0, "efSearch", EF_SEARCH
    elif kind == "ivf_flat":
        factory, param, values = f"IDMap2,IVF{nlist},Flat", "nprobe", nprobe
    elif kind == "ivf_fs_refine":  # 4-bit fast-scan PQ over 2-d sub-vectors, re-ranked on float16 vectors
        pq = f"PQ{d // 2 if d % 2 == 0 else d}x4fs"
        factory, param, values = f"IDMap2,IVF{nlist},{pq},Refine(SQfp16)", "nprobe", nprobe
        sample = min(n, max(sample, PQ_TRAIN_MIN))
    elif kind == "ivf_sq8":
        factory, param, values = f"IDMap2,IVF{nlist},SQ8", "nprobe", nprobe
    else:
        m = m or pq_choices(d, gpu)[0]
        if d % m:
            raise ValueError(f"PQ m={m} must divide d={d}")
        nbits = pq_nbits(n)
        pq = f"PQ{m}" if nbits == 8 else f"PQ{m}x{nbits}"
        factory, param, values = f"IDMap2,OPQ{m},IVF{nlist},{pq}", "nprobe", nprobe
        sample = min(n, max(sample, PQ_TRAIN_MIN))
    if parts < 1:
        raise ValueError(f"need parts >= 1, got {parts}")
    parts = parts if kind == "hnsw_split" else 1
    return IndexPlan(
        kind=kind,
        factory=factory,
        n=n,
        d=d,
        parts=parts,
        memory_bytes=estimate_memory(factory, n, d),
        train_sample=sample,
        search_param=param,
        candidates=values,
        reason="",
    )


def choose_index(n: int, d: int, memory_budget_bytes: int, gpu: bool = False) -> IndexPlan:
    """The first rung of the ladder in the module docstring that fits ``memory_budget_bytes``: a plan by rule,
    for an operator's first guess and the over-budget case of :func:`ladder` (an ``auto`` index measures instead)."""
    gib = memory_budget_bytes / 2**30

    def fits(plan: IndexPlan) -> bool:
        return plan.memory_bytes <= memory_budget_bytes

    def explain(plan: IndexPlan, why: str) -> IndexPlan:
        size = f"~{plan.memory_bytes / 2**30:.2f} GiB of a {gib:.2f} GiB budget"
        return replace(plan, reason=f"{why} ({n} x {d}, {size})")

    flat = make_plan("flat", n, d, gpu=gpu)
    if n * d <= EXACT_MAX_WORK and fits(flat):
        return explain(flat, f"exact search: n*d <= {EXACT_MAX_WORK:,} is a few ms a query")
    if not gpu:
        hnsw = make_plan("hnsw", n, d)
        if n <= HNSW_MAX_N and fits(hnsw):
            return explain(hnsw, f"HNSW: n <= {HNSW_MAX_N:,} and vectors + graph links fit in RAM")
    where = "GPU (no HNSW there), " if gpu else ""
    for kind, why in (
        ("ivf_flat", "IVF-Flat: full vectors in inverted lists fit"),
        ("ivf_sq8", "IVF-SQ8: full vectors do not fit, 1 byte a dimension does"),
    ):
        plan = make_plan(kind, n, d, gpu=gpu)
        if fits(plan):
            return explain(plan, where + why)
    pqs = [make_plan("ivf_pq", n, d, gpu=gpu, m=m) for m in pq_choices(d, gpu)]
    for plan in pqs:
        if fits(plan):
            return explain(plan, f"{where}OPQ+IVF-PQ: the largest code that fits")
    return explain(pqs[-1], f"{where}OVER BUDGET: even the smallest OPQ+IVF-PQ code does not fit")


# The measured ladder (index.ladder): the rungs built and measured for an ``auto`` index, in this order.
# IVF-SQ8 and OPQ+IVF-PQ are memory fallbacks, measured only when IVF-Flat does not fit.
# Both graph walks: hnsw_pca beat hnsw at 1M x 512 (mixture, text-like queries), hnsw beat hnsw_pca on real
# caption queries (the image space's principal components do not carry what ranks captions): measured per build.
LADDER = ("flat", "ivf_flat", "ivf_fs_refine", "hnsw", "hnsw_pca", "hnsw_qa")
# Not in it, but kinds an operator can set (or add to ``index_ladder``) and the benchmark measures beside it:
# hnsw_split (hnsw_pca in one graph a core: 5% faster single queries at 1M, 40% less throughput at batch 64,
# and 2.5 more minutes of ladder build; docs/benchmarks.md, index-mixture) and hnsw_flat.
FALLBACKS = ("ivf_sq8", "ivf_pq")


def ladder(
    n: int,
    d: int,
    memory_budget_bytes: int,
    *,
    gpu: bool = False,
    query_aware: bool = False,
    kinds=None,
    parts: int = 1,
) -> list[IndexPlan]:
    """The rungs worth measuring for ``n x d`` under the budget: those of ``kinds`` that fit (default:
    ``LADDER``, plus the memory fallbacks when IVF-Flat does not fit); ``hnsw_qa`` only with training queries
    (``query_aware``), ``hnsw_split`` (when asked for) only with ``parts > 1`` (the cores a query can use),
    HNSW kinds only up to ``HNSW_MAX_N``. Never empty: if nothing fits, the first-fit plan of
    :func:`choose_index` (which says it is over budget)."""
    wanted = tuple(kinds or LADDER)
    plans: list[IndexPlan] = []
    for kind in wanted + (() if kinds else FALLBACKS):
        plan = make_plan(kind, n, d, gpu=gpu, parts=max(parts, 1))
        if (kind == "hnsw_qa" and not query_aware) or (kind.startswith("hnsw") and n > HNSW_MAX_N):
            continue
        if kind == "hnsw_split" and (parts < 2 or n < parts):
            continue
        if kind in FALLBACKS and kind not in wanted and any(p.kind == "ivf_flat" for p in plans):
            continue
        if plan.memory_bytes <= memory_budget_bytes:
            plans.append(replace(plan, reason=f"measured ladder rung ({n} x {d})"))
    return plans or [choose_index(n, d, memory_budget_bytes, gpu=gpu)]


def estimate_memory(factory: str, n: int, d: int) -> int:
    """Resident bytes of ``factory`` holding ``n`` vectors of dimension ``d`` (the kinds above only).

    Counted: codes, per-vector ids (IDMap2 and IVF lists), HNSW links, IVF
    centroids, PQ codebooks and the OPQ matrix. Not counted: allocator slack
    while lists grow during ``add`` (up to ~1.4x the codes) and the training
    sample, which the builder logs separately.
    """
    body = re.sub(r"^IDMap2?,", "", factory)
    per_vector = IDMAP2_BYTES if factory.startswith("IDMap2,") else 0
    fixed = 0
    if (m := re.match(r"^OPQ(\d+),", body)) is not None:
        fixed += 4 * d * d  # the rotation matrix
        body = body[m.end() :]
    if body == "Flat":
        return n * (per_vector + 4 * d)
    if (m := re.fullmatch(r"HNSW(\d+)(?:,Flat)?", body)) is not None:
        links = 2 * int(m.group(1)) * 4 * 1.05  # level 0 has 2M links; upper levels add ~1/M
        return int(n * (per_vector + 4 * d + links + 12))  # + level and offset bookkeeping
    if (m := re.fullmatch(r"(?:PCA(\d+),)?(HNSW\d+),SQ8,Refine\(Flat\)", body)) is not None:
        walk = int(m.group(1) or d)  # dimensions of the walk's codes
        fixed += 4 * d * walk + 4 * d if m.group(1) else 0  # the PCA matrix and mean
        graph = estimate_memory(m.group(2), n, d) - 4 * d * n  # links and bookkeeping, no float vectors
        # codes, the refine stage's floats, SQ ranges
        return int(fixed + graph + n * (per_vector + walk + 4 * d) + 2 * 4 * walk)
    if (m := re.fullmatch(r"(IVF\d+,PQ\d+x4fs),Refine\(SQfp16\)", body)) is not None:
        base = estimate_memory(m.group(1), n, d)  # no IDMap2 part: counted once, below
        return int(base + 2 * d * n + n * per_vector)
    if (m := re.fullmatch(r"IVF(\d+),(Flat|SQ8|PQ(\d+)(?:x(\d+))?(?:fs)?)", body)) is not None:
        nlist, code = int(m.group(1)), m.group(2)
        fixed += 4 * d * nlist  # coarse centroids
        if code == "Flat":
            code_size = 4 * d
        elif code == "SQ8":
            code_size = d
            fixed += 2 * 4 * d  # per-dimension min and range
        else:
            pq_m, nbits = int(m.group(3)), int(m.group(4) or 8)
            code_size = math.ceil(pq_m * nbits / 8)
            fixed += 4 * d * (1 << nbits)  # codebooks: m sub-spaces x 2^nbits x d/m floats
        return int(fixed + n * (per_vector + IVF_ID_BYTES + code_size))
    raise ValueError(f"cannot estimate the memory of {factory!r}")
