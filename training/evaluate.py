"""Evaluation of a two-tower model: retrieval, attribute binding; linear probe and zero-shot on the
synthetic world (the probes themselves: :mod:`training.probes`).

The metric functions are plain functions over numpy embeddings, so they serve any
model and any data; the ``*_synthetic`` / encoder wrappers only fetch embeddings.
Scores are inner products: pass unit rows (as ``Encoder`` returns) for cosine.

One rule for ties throughout: a wrong candidate that scores *equal* to the right one
is ranked ahead of it. A collapsed model (every embedding the same) then scores
zero everywhere instead of a perfect Recall@1 by accident of index order.

Metrics that are undefined for the data (no queries, fewer classes than k) are
``None``, never NaN, so a report stays valid JSON (PostgreSQL rejects NaN).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from crossmodal_kernel.images import open_image
from training.probes import encode_class_prompts, linear_probe, zeroshot_accuracy
from training.synthetic.captions import scene_key
from training.synthetic.shapes import COLOURS, POSITIONS, SHAPES, SIZES, SWAPPABLE, SyntheticDataset

if TYPE_CHECKING:
    from crossmodal_kernel.encoder import Encoder

Progress = Callable[[str, int, int], None]  # (stage, done, total)

RECALL_KS = (1, 5, 10)
SIM_BUDGET_BYTES = 64 << 20  # float32 similarities held at once per query chunk

ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "colour": tuple(COLOURS),
    "shape": SHAPES,
    "size": SIZES,
    "position": POSITIONS,
}
# Zero-shot prompts per attribute, worded like the captions ("a large red circle in the top left").
ZEROSHOT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "colour": ("a {} shape", "a {} object", "a photo of a {} shape."),
    "shape": ("a {}", "a coloured {}", "a photo of a {}."),
    "size": ("a {} shape", "a {} object", "a photo of a {} shape."),
    "position": ("a shape in the {}", "an object in the {}", "a photo of a shape in the {}."),
}


# ----------------------------------------------------------------------------- retrieval


def retrieval_metrics(
    img_emb: np.ndarray,
    txt_emb: np.ndarray,
    txt2img: Sequence[int] | np.ndarray,
    keys: Sequence[Hashable] | None = None,
    *,
    ks: Sequence[int] = RECALL_KS,
    chunk_size: int | None = None,
) -> dict:
    """Text->image and image->text Recall@k and median rank, aware of duplicate captions.

    Text ``i`` describes image ``txt2img[i]``; an image may have several texts. With
    ``keys`` (one per text: the caption string, an attribute tuple...), text ``t`` and
    image ``j`` also match when ``keys[t]`` equals the key of any text of ``j``: a
    dataset with two "a red circle" images has two right answers for that query, and
    ranking the other one first is not a miss. Without keys only the pairs match.

    The rank of a query is the 1-based rank of its best-scoring matching candidate;
    Recall@k is the fraction of queries with rank <= k (a match within the top k), so
    one pass gives both. Image queries with no matching text (images without
    captions) are left out of image->text.

    Queries go in chunks of ``chunk_size`` (default: about 64 MiB of similarities), so
    a 100k x 100k evaluation never holds the full similarity matrix.
    """
    img_emb, txt_emb = _as_2d(img_emb, "img_emb"), _as_2d(txt_emb, "txt_emb")
    txt2img = np.asarray(txt2img, dtype=np.int64).reshape(-1)
    n_img, n_txt = len(img_emb), len(txt_emb)
    if img_emb.shape[1] != txt_emb.shape[1]:
        raise ValueError(f"embedding widths differ: {img_emb.shape[1]} vs {txt_emb.shape[1]}")
    if len(txt2img) != n_txt or (n_txt and (txt2img.min() < 0 or txt2img.max() >= n_img)):
        raise ValueError("txt2img needs one image index in [0, n_images) per text")
    if keys is None:
        keys = txt2img.tolist()  # the image itself is the key: only true pairs match
    elif len(keys) != n_txt:
        raise ValueError(f"need one key per text, got {len(keys)} for {n_txt} texts")

    # Texts and images as rows of a sparse "has key" matrix; matches are their product.
    key_ids: dict[Hashable, int] = {}
    group = np.array([key_ids.setdefault(k, len(key_ids)) for k in keys], dtype=np.int64)
    ones = np.ones(n_txt, dtype=np.float32)
    txt_keys = sp.csr_matrix((ones, (np.arange(n_txt), group)), shape=(n_txt, len(key_ids)))
    img_keys = sp.csr_matrix((ones, (txt2img, group)), shape=(n_img, len(key_ids)))
    captioned = np.flatnonzero(np.diff(img_keys.indptr))

    out: dict = {}
    for name, queries, query_keys, corpus, corpus_keys in (
        ("t2i", txt_emb, txt_keys, img_emb, img_keys),
        ("i2t", img_emb[captioned], img_keys[captioned], txt_emb, txt_keys),
    ):
        ranks = _match_ranks(queries, query_keys, corpus, corpus_keys, chunk_size)
        for k in ks:
            out[f"{name}_R@{k}"] = float(np.mean(ranks <= k)) if len(ranks) else None
        out[f"{name}_median_rank"] = float(np.median(ranks)) if len(ranks) else None
    return out


def _match_ranks(queries, query_keys, corpus, corpus_keys, chunk_size: int | None) -> np.ndarray:
    """1-based rank of each query's best matching corpus item; every query must have one."""
    if chunk_size is None:
        chunk_size = max(1, SIM_BUDGET_BYTES // (4 * max(1, len(corpus))))
    corpus_keys_t = corpus_keys.T.tocsr()
    ranks = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), chunk_size):
        stop = min(start + chunk_size, len(queries))
        sims = queries[start:stop] @ corpus.T
        match = (query_keys[start:stop] @ corpus_keys_t).tocsr()  # (b, n_corpus) sparse pattern
        row = np.repeat(np.arange(stop - start), np.diff(match.indptr))
        match_sims = sims[row, match.indices]
        best = np.maximum.reduceat(match_sims, match.indptr[:-1])
        # Everything scoring >= the best match is ahead of it, except the matches tied with it.
        tied_matches = np.add.reduceat((match_sims == best[row]).astype(np.int64), match.indptr[:-1])
        ranks[start:stop] = (sims >= best[:, None]).sum(axis=1) - tied_matches + 1
    return ranks


def concept_retrieval_metrics(
    img_emb: np.ndarray,
    image_concepts: Sequence[Hashable],
    query_emb: np.ndarray,
    query_concepts: Sequence[Hashable],
    text_emb: np.ndarray,
    text_concepts: Sequence[Collection[Hashable]],
    *,
    ks: Sequence[int] = RECALL_KS,
    chunk_size: int | None = None,
) -> dict:
    """Retrieval by concept: the hit rule for sets where several images and texts stand for one concept.

    - **text -> image**: query ``q`` (a concept's name, ``query_concepts[q]`` its concept) hits any
      image of that concept in the pool, whoever drew it: the first such image's rank is the
      query's rank. Pool: every image (``img_emb``).
    - **image -> text**: image ``j`` hits any text that names or describes its concept: the pool is
      ``text_emb``, one row per distinct string (the concepts' names and all their captions, each
      counted once however many concepts share it), and ``text_concepts[t]`` holds every concept
      text ``t`` belongs to. A keyword shared by many concepts ("face") is one candidate that is a
      hit for each of them.

    Ranks follow :func:`retrieval_metrics` (ties rank the hit last). Besides R@k and the median
    rank per direction, the report gives the pool and query counts and the chance level of each
    R@k: the mean over queries of ``1 - C(N - m, k) / C(N, k)`` for a query with ``m`` hits among
    ``N`` candidates, what a random ranking scores.
    """
    img_emb, query_emb, text_emb = (_as_2d(a, n) for a, n in ((img_emb, "img_emb"), (query_emb, "query_emb"),
                                                              (text_emb, "text_emb")))  # fmt: skip
    if not (len(img_emb) == len(image_concepts) and len(query_emb) == len(query_concepts)
            and len(text_emb) == len(text_concepts)):  # fmt: skip
        raise ValueError("need one concept per image and query, and a set of concepts per text")
    ids: dict[Hashable, int] = {}
    img_c = np.array([ids.setdefault(c, len(ids)) for c in image_concepts], dtype=np.int64)
    qry_c = np.array([ids.setdefault(c, len(ids)) for c in query_concepts], dtype=np.int64)
    t_rows = [(t, ids.setdefault(c, len(ids))) for t, cs in enumerate(text_concepts) for c in cs]
    width = max(1, len(ids))

    def one_hot(concept_ids: np.ndarray) -> sp.csr_matrix:
        n = len(concept_ids)
        return sp.csr_matrix((np.ones(n, dtype=np.float32), (np.arange(n), concept_ids)), shape=(n, width))

    img_keys, qry_keys = one_hot(img_c), one_hot(qry_c)
    t_idx = np.array([t for t, _ in t_rows], dtype=np.int64)
    t_con = np.array([c for _, c in t_rows], dtype=np.int64)
    txt_keys = sp.csr_matrix((np.ones(len(t_rows), dtype=np.float32), (t_idx, t_con)), shape=(len(text_emb), width))

    out: dict = {}
    for name, queries, q_keys, corpus, c_keys in (
        ("t2i", query_emb, qry_keys, img_emb, img_keys),
        ("i2t", img_emb, img_keys, text_emb, txt_keys),
    ):
        hits = np.asarray((q_keys @ c_keys.T).getnnz(axis=1)).reshape(-1)
        answerable = hits > 0
        ranks = _match_ranks(queries[answerable], q_keys[answerable], corpus, c_keys, chunk_size)
        for k in ks:
            out[f"{name}_R@{k}"] = float(np.mean(ranks <= k)) if len(ranks) else None
        out[f"{name}_median_rank"] = float(np.median(ranks)) if len(ranks) else None
        out[f"{name}_queries"] = int(answerable.sum())
        out[f"{name}_pool"] = len(corpus)
        for k in ks:
            out[f"{name}_chance_R@{k}"] = chance_recall(len(corpus), hits[answerable], k) if len(ranks) else None
    return out


def chance_recall(pool: int, hits: np.ndarray | Sequence[int], k: int) -> float:
    """Mean over queries of the probability that a random ranking of ``pool`` candidates puts one of
    a query's ``hits`` in the top ``k``: ``1 - C(pool - m, k) / C(pool, k)``."""
    m = np.asarray(hits, dtype=np.float64)
    k = min(k, pool)
    miss = np.ones_like(m)
    for i in range(k):  # C(N - m, k) / C(N, k) = prod_i (N - m - i) / (N - i)
        miss *= np.clip(pool - m - i, 0, None) / (pool - i)
    return float(np.mean(1 - miss)) if len(m) else 0.0


# ----------------------------------------------------------------------------- binding


def binding_accuracy(
    img_emb: np.ndarray,
    true_emb: np.ndarray,
    distractor_emb: np.ndarray,
    swapped: Sequence[str] | None = None,
    attributes: Sequence[str] = SWAPPABLE,
) -> dict:
    """Fraction of images closer to their true caption than to a one-attribute-swapped one.

    Row ``i`` of each array belongs to hard pair ``i``. A tie counts as wrong: a model
    that cannot separate "red circle" from "blue circle" has not bound colour to shape.
    With ``swapped`` (the attribute each distractor changed) the accuracy is also
    reported per attribute in ``attributes`` (``None`` for one with no pairs), so the
    keys stay the same whatever the sample holds.
    """
    img_emb, true_emb = _as_2d(img_emb, "img_emb"), _as_2d(true_emb, "true_emb")
    distractor_emb = _as_2d(distractor_emb, "distractor_emb")
    if not len(img_emb) == len(true_emb) == len(distractor_emb):
        raise ValueError("img_emb, true_emb and distractor_emb need one row per hard pair")
    margin = np.einsum("ij,ij->i", img_emb, true_emb) - np.einsum("ij,ij->i", img_emb, distractor_emb)
    correct = margin > 0
    out = {"binding_acc": float(correct.mean()) if len(correct) else None}
    if swapped is not None:
        swapped_arr = np.asarray(swapped, dtype=object)
        if len(swapped_arr) != len(correct):
            raise ValueError("swapped needs one attribute name per hard pair")
        for attribute in attributes:
            mine = correct[swapped_arr == attribute]
            out[f"binding_acc_{attribute}"] = float(mine.mean()) if len(mine) else None
    return out


# ----------------------------------------------------------------------------- synthetic world


def evaluate_synthetic(
    encoder: Encoder,
    dataset: SyntheticDataset,
    split: str = "test",
    *,
    probe_attribute: str = "colour",
    chunk_size: int = 256,
    progress: Progress | None = None,
) -> dict:
    """All four evaluations on the synthetic shapes world, as one flat report dict.

    - retrieval over ``split``, with scenes as keys (identical scenes are interchangeable
      answers, however their captions are worded);
    - binding on ``hard.csv`` (which always holds test items, whatever ``split``);
    - linear probe for ``probe_attribute``, fit on the train split, scored on
      ``split`` (``None`` when ``split`` is "train": nothing would be held out);
    - zero-shot over that attribute's values with ``ZEROSHOT_TEMPLATES``.

    Every image is decoded and encoded once, ``chunk_size`` at a time to bound memory.
    """
    if probe_attribute not in ATTRIBUTE_VALUES:
        raise ValueError(f"unknown attribute {probe_attribute!r}; expected one of {tuple(ATTRIBUTE_VALUES)}")
    rows, hard = dataset.rows(split), dataset.hard_rows()
    train = dataset.rows("train") if split != "train" else []
    paths = list(dict.fromkeys(str(dataset.image_path(r)) for r in (*rows, *hard, *train)))
    img = _encode_image_files(encoder, paths, chunk_size, progress)
    at = {p: i for i, p in enumerate(paths)}

    def images_of(some_rows: list[dict]) -> np.ndarray:
        return img[[at[str(dataset.image_path(r))] for r in some_rows]]

    captions = [r["text"] for r in rows]
    pairs = [*(r["text"] for r in hard), *(r["distractor"] for r in hard)]
    txt = _encode_texts_once(encoder, captions + pairs)
    split_img = images_of(rows)
    report = {"split": split, "n_images": len(rows), "n_texts": len(captions), "n_hard": len(hard)}
    keys = [scene_key(r) for r in rows]
    report |= retrieval_metrics(split_img, txt[: len(rows)], np.arange(len(rows)), keys=keys)
    n, h = len(rows), len(hard)
    report |= binding_accuracy(images_of(hard), txt[n : n + h], txt[n + h :], [r["swapped"] for r in hard])

    labels = [r[probe_attribute] for r in rows]
    report["probe_attribute"] = probe_attribute
    if train:
        report |= linear_probe(images_of(train), [r[probe_attribute] for r in train], split_img, labels)
    else:
        report |= {"probe_top1": None, "probe_C": None, "probe_val_top1": None}
    values = ATTRIBUTE_VALUES[probe_attribute]
    classes = encode_class_prompts(encoder, values, ZEROSHOT_TEMPLATES[probe_attribute])
    report |= zeroshot_accuracy(split_img, classes, [values.index(v) for v in labels])
    return report


def _encode_image_files(encoder: Encoder, paths: list[str], chunk_size: int, progress: Progress | None):
    chunks = []
    for start in range(0, len(paths), chunk_size):
        chunks.append(encoder.encode_images([open_image(p) for p in paths[start : start + chunk_size]]))
        if progress:
            progress("encode images", min(start + chunk_size, len(paths)), len(paths))
    return np.concatenate(chunks) if chunks else np.zeros((0, encoder.embed_dim), dtype=np.float32)


def _encode_texts_once(encoder: Encoder, texts: list[str]) -> np.ndarray:
    """Embeddings for ``texts``, encoding each distinct string once (captions repeat a lot)."""
    distinct = list(dict.fromkeys(texts))
    if not distinct:
        return np.zeros((len(texts), encoder.embed_dim), dtype=np.float32)
    at = {t: i for i, t in enumerate(distinct)}
    return encoder.encode_texts(distinct)[[at[t] for t in texts]]


# ----------------------------------------------------------------------------- skipped rows

MOST_MISSING = 0.5  # an evaluation set missing the images of more than this share of its rows fails
SKIP_KEYS = {  # training.sources' reasons (and eval_sets' own) as report keys
    "image file missing": "missing_image",
    "row has neither image nor text": "no_image_or_text",
    "malformed JSON line": "malformed_line",
}


class MostImagesMissing(ValueError):
    """Most rows of an evaluation set point at image files that are not there."""


def skipped_rows(skipped: dict[str, int], kept: int, source: str = "the evaluation set") -> dict[str, int]:
    """The rows a set dropped, by reason, for the report's ``skipped`` field (``{"missing_image": 3}``).

    Raises :class:`MostImagesMissing` when more than half of the rows (kept and skipped) lost
    their image: a figure on the few rows that remain is a figure on another, smaller set (a
    moved data folder, a half-copied dataset), and silently quoting it would mislead. Rows are
    counted as the manifest reader saw them, before any ``split`` filter.
    """
    counts = {SKIP_KEYS.get(reason, _snake(reason)): n for reason, n in sorted(skipped.items()) if n}
    missing = counts.get("missing_image", 0)
    total = kept + sum(counts.values())
    if total and missing / total > MOST_MISSING:
        raise MostImagesMissing(
            f"{missing} of {total} rows of {source} name an image file that does not exist "
            "(a moved or half-copied dataset?); refusing to report figures on the rest"
        )
    return counts


def _snake(reason: str) -> str:
    return "_".join("".join(ch if ch.isalnum() else " " for ch in reason.lower()).split())


# ----------------------------------------------------------------------------- rendering


def report_markdown(report: dict) -> str:
    """A compact markdown rendering: a retrieval table, then one row of the other scores."""

    def fmt(value, rank: bool = False) -> str:
        if value is None:
            return "–"
        if isinstance(value, float):
            return f"{value:g}" if rank else f"{value:.3f}"
        return str(value)

    lines = ["| direction | R@1 | R@5 | R@10 | median rank |", "|---|---|---|---|---|"]
    for name, label in (("t2i", "text → image"), ("i2t", "image → text")):
        cells = [fmt(report.get(f"{name}_R@{k}")) for k in RECALL_KS]
        cells.append(fmt(report.get(f"{name}_median_rank"), rank=True))
        lines.append(f"| {label} | {' | '.join(cells)} |")

    attribute = report.get("probe_attribute") or "?"
    per_binding = [k for k in report if k.startswith("binding_acc_")]
    columns = {
        "binding": report.get("binding_acc"),
        **{f"binding: {k.removeprefix('binding_acc_')}": report[k] for k in per_binding},
        f"probe top-1 ({attribute})": report.get("probe_top1"),
        f"zero-shot top-1 ({attribute})": report.get("zeroshot_top1"),
        f"zero-shot top-5 ({attribute})": report.get("zeroshot_top5"),
    }
    lines += [
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        "| " + " | ".join(fmt(v) for v in columns.values()) + " |",
        "",
        f"Split `{report.get('split', '?')}`: {fmt(report.get('n_images'))} images, "
        f"{fmt(report.get('n_texts'))} texts, {fmt(report.get('n_hard'))} hard pairs.",
    ]
    if report.get("hit_rule") == "concept":
        lines.append(
            f"Hit rule: concept (any image of the query's concept; for image → text its name or any of its "
            f"captions). Pools: {fmt(report.get('t2i_pool'))} images (chance R@1 "
            f"{fmt(report.get('t2i_chance_R@1'))}), {fmt(report.get('i2t_pool'))} texts (chance R@1 "
            f"{fmt(report.get('i2t_chance_R@1'))})."
        )
    if report.get("skipped"):
        lines.append("Rows skipped: " + ", ".join(f"{k} {v}" for k, v in report["skipped"].items()) + ".")
    return "\n".join(lines) + "\n"


def _as_2d(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {a.shape}")
    return a


__all__ = [
    "ATTRIBUTE_VALUES",
    "ZEROSHOT_TEMPLATES",
    "retrieval_metrics",
    "concept_retrieval_metrics",
    "chance_recall",
    "binding_accuracy",
    "evaluate_synthetic",
    "report_markdown",
    "skipped_rows",
    "MostImagesMissing",
]
