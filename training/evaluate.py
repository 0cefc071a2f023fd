"""Evaluation of a two-tower model: retrieval, attribute binding, linear probe, zero-shot.

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

import warnings
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from crossmodal_kernel.images import open_image
from training.synthetic.captions import scene_key
from training.synthetic.shapes import COLOURS, POSITIONS, SHAPES, SIZES, SWAPPABLE, SyntheticDataset

if TYPE_CHECKING:
    from crossmodal_kernel.encoder import Encoder

Progress = Callable[[str, int, int], None]  # (stage, done, total)

RECALL_KS = (1, 5, 10)
PROBE_CS = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)  # inverse regularisation strengths swept
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
        swapped = np.asarray(swapped, dtype=object)
        if len(swapped) != len(correct):
            raise ValueError("swapped needs one attribute name per hard pair")
        for attribute in attributes:
            mine = correct[swapped == attribute]
            out[f"binding_acc_{attribute}"] = float(mine.mean()) if len(mine) else None
    return out


# ----------------------------------------------------------------------------- linear probe


def linear_probe(
    train_x: np.ndarray,
    train_y: Sequence,
    test_x: np.ndarray,
    test_y: Sequence,
    *,
    Cs: Sequence[float] = PROBE_CS,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> dict:
    """Top-1 accuracy of a multinomial logistic regression on frozen embeddings.

    scikit-learn's ``LogisticRegression`` (lbfgs) rather than a torch softmax layer:
    the problem is convex and the solver deterministic, so there is no learning rate,
    epoch count or seed to tune, only the regularisation strength ``C``. It is chosen
    on a validation split carved from train (``val_fraction`` of each class, picked by
    a ``seed``-ed permutation; the smaller ``C`` wins a tie), then the probe is refit
    on all of train. A class too small to spare a member stays wholly in train; when
    nothing is left for validation the sklearn default ``C = 1`` is used.
    """
    train_x, test_x = _as_2d(train_x, "train_x"), _as_2d(test_x, "test_x")
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise ValueError("need one label per embedding")
    if len(np.unique(train_y)) < 2:
        raise ValueError("a linear probe needs at least two classes in train")

    rng = np.random.default_rng(seed)
    is_val = np.zeros(len(train_y), dtype=bool)
    for label in np.unique(train_y):
        members = rng.permutation(np.flatnonzero(train_y == label))
        is_val[members[: int(len(members) * val_fraction)]] = True
    fit, val = ~is_val, is_val

    best_c, best_val = 1.0, None
    if val.any() and len(np.unique(train_y[fit])) >= 2:
        for c in sorted(Cs):
            predicted = _fit_probe(train_x[fit], train_y[fit], c).predict(train_x[val])
            acc = float(np.mean(predicted == train_y[val]))
            if best_val is None or acc > best_val:
                best_c, best_val = c, acc
    probe = _fit_probe(train_x, train_y, best_c)
    top1 = float(np.mean(probe.predict(test_x) == test_y)) if len(test_y) else None
    return {"probe_top1": top1, "probe_C": float(best_c), "probe_val_top1": best_val}


def _fit_probe(x: np.ndarray, y: np.ndarray, c: float) -> LogisticRegression:
    # Large C on separable data may stop at max_iter; the validation sweep judges the result anyway.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=c, max_iter=1000).fit(x, y)


# ----------------------------------------------------------------------------- zero-shot


def class_embeddings(prompt_emb: np.ndarray) -> np.ndarray:
    """(n_classes, n_templates, d) prompt embeddings -> (n_classes, d) unit class vectors.

    Averaging over several wordings (Radford et al., 2021, prompt ensembling) smooths
    out how much any one template happens to suit a class name.
    """
    if prompt_emb.ndim != 3:
        raise ValueError(f"expected (n_classes, n_templates, d), got shape {prompt_emb.shape}")
    mean = prompt_emb.astype(np.float32).mean(axis=1)
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)


def zeroshot_accuracy(img_emb: np.ndarray, class_emb: np.ndarray, labels: Sequence[int]) -> dict:
    """Top-1 (and top-5 with >= 5 classes, else ``None``) accuracy of nearest-class-vector labels."""
    img_emb, class_emb = _as_2d(img_emb, "img_emb"), _as_2d(class_emb, "class_emb")
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(labels) != len(img_emb):
        raise ValueError("need one label per image")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(class_emb)):
        raise ValueError("labels must index rows of class_emb")
    scores = img_emb @ class_emb.T
    true = scores[np.arange(len(labels)), labels][:, None]
    ranks = (scores >= true).sum(axis=1)  # the true class counts itself; ties rank it last
    out = {"zeroshot_top1": float(np.mean(ranks <= 1)) if len(ranks) else None, "zeroshot_top5": None}
    if len(class_emb) >= 5 and len(ranks):
        out["zeroshot_top5"] = float(np.mean(ranks <= 5))
    return out


def encode_class_prompts(encoder: Encoder, classnames: Sequence[str], templates: Sequence[str]) -> np.ndarray:
    """Unit class vectors from ``template.format(name)`` prompts, e.g. ``"a photo of a {}."``."""
    prompts = [t.format(name) for name in classnames for t in templates]
    emb = encoder.encode_texts(prompts)
    return class_embeddings(emb.reshape(len(classnames), len(templates), -1))


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
    "binding_accuracy",
    "linear_probe",
    "class_embeddings",
    "zeroshot_accuracy",
    "encode_class_prompts",
    "evaluate_synthetic",
    "report_markdown",
    "skipped_rows",
    "MostImagesMissing",
]
