"""Evaluation sets any dataset can provide, and the metrics every one of them gets.

A set is image–caption pairs; with a ``distractor`` caption per pair (one attribute swapped, as
in the synthetic world's ``hard.csv``, or from a user's own manifest) it also measures binding.
Retrieval is duplicate-aware: an image whose caption equals the query's counts as a hit. A set
whose manifest has a ``concept`` column (the emoji manifests: one concept drawn by several houses,
with a ``captions`` list) is scored by concept instead
(:func:`training.evaluate.concept_retrieval_metrics`): text -> image queries are the concepts'
names, and a hit is any image of the query's concept from any house in the pool; image -> text
ranks every distinct name and caption, and a hit is the image's concept's name or any of its
captions, each string counted once. The report then carries each pool's size and chance level.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crossmodal_kernel.images import open_image
from training.evaluate import binding_accuracy, concept_retrieval_metrics, retrieval_metrics, skipped_rows
from training.sources import SourceReport, iter_manifest

CONCEPT_COLUMN = "concept"  # a manifest column naming each row's concept: the concept hit rule applies

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class EvalPairs:
    images: list[str]
    texts: list[str]
    distractors: list[str] | None = None  # a wrong caption per pair, for binding
    swapped: list[str] | None = None  # which attribute each distractor changed
    skipped: dict[str, int] = field(default_factory=dict)  # rows left out, by reason (missing_image...)
    concepts: list[str] | None = None  # each row's concept (a `concept` column): the concept hit rule
    captions: list[tuple[str, ...]] | None = None  # each row's further captions, for the concept rule's i2t

    def __len__(self) -> int:
        return len(self.images)


def manifest_pairs(manifest: Path, split: str | None = None) -> EvalPairs:
    """Rows with an image and a text; only ``split`` rows when the manifest has a ``split`` column.

    ``distractor`` (and ``swapped``) columns, when every kept row has one, make a binding set.
    Rows left out are counted by reason in ``skipped``; most rows' images missing is an error
    (:func:`training.evaluate.skipped_rows`).
    """
    images: list[str] = []
    texts: list[str] = []
    distractors: list = []
    swapped: list = []
    concepts: list = []
    captions: list[tuple[str, ...]] = []
    report = SourceReport()
    for rec in iter_manifest(Path(manifest), report):
        if split is not None and "split" in rec.metadata and rec.metadata["split"] != split:
            continue
        if not (rec.image_path and rec.text):
            report.skip("no text" if rec.image_path else "no image")
            continue
        images.append(rec.image_path)
        texts.append(rec.text)
        distractors.append(rec.metadata.get("distractor"))
        swapped.append(rec.metadata.get("swapped"))
        concepts.append(rec.metadata.get(CONCEPT_COLUMN))
        captions.append(tuple(rec.captions))
    has_binding = bool(images) and all(isinstance(d, str) and d for d in distractors)
    has_concepts = bool(images) and all(c not in (None, "") for c in concepts)
    return EvalPairs(
        images,
        texts,
        distractors if has_binding else None,
        swapped if has_binding and all(isinstance(s, str) for s in swapped) else None,
        skipped_rows(report.skipped, len(images), str(manifest)),
        [str(c) for c in concepts] if has_concepts else None,
        captions if has_concepts else None,
    )


def evaluate_pairs(encoder, pairs: EvalPairs, progress: Progress | None = None, chunk_size: int = 256) -> dict:
    """Recall@1/5/10 both ways and median rank (duplicate-aware); binding when the set has distractors."""
    if not len(pairs):
        raise ValueError("the evaluation set has no pairs with both an image and a text")
    chunks = []
    for start in range(0, len(pairs), chunk_size):
        batch = pairs.images[start : start + chunk_size]
        chunks.append(encoder.encode_images([open_image(p) for p in batch]))
        if progress:
            progress("encode images", min(start + chunk_size, len(pairs)), len(pairs))
    img = np.concatenate(chunks)
    report: dict = {"pairs": len(pairs), "skipped": dict(pairs.skipped)}
    if pairs.concepts is not None:
        report |= concept_report(img, pairs, encoder.encode_texts)
        txt = None
    else:
        txt = encoder.encode_texts(pairs.texts)
        report |= retrieval_metrics(img, txt, np.arange(len(pairs)), keys=pairs.texts)
    if pairs.distractors is not None:
        txt = encoder.encode_texts(pairs.texts) if txt is None else txt
        report |= binding_accuracy(img, txt, encoder.encode_texts(pairs.distractors), pairs.swapped)
    return report


def concept_texts(pairs: EvalPairs) -> tuple[list[str], list[str], list[str], list[frozenset[str]]]:
    """For the concept rule: ``(query texts, their concepts, pool texts, each pool text's concepts)``.

    A concept's query is the text of its first row (its name); the pool is every distinct string
    among the rows' texts and captions, each with the set of concepts whose rows carry it.
    """
    if pairs.concepts is None:
        raise ValueError("the set has no concept column")
    names: dict[str, str] = {}
    owners: dict[str, set[str]] = {}
    captions = pairs.captions or [()] * len(pairs)
    for text, concept, more in zip(pairs.texts, pairs.concepts, captions, strict=True):
        names.setdefault(concept, text)
        for t in (text, *more):
            if t.strip():
                owners.setdefault(t, set()).add(concept)
    return list(names.values()), list(names), list(owners), [frozenset(c) for c in owners.values()]


def concept_report(img: np.ndarray, pairs: EvalPairs, encode_texts: Callable[[list[str]], np.ndarray]) -> dict:
    """:func:`training.evaluate.concept_retrieval_metrics` for ``pairs`` whose image embeddings are ``img``.

    Besides the rule's figures, ``i2t_names_R@k`` ranks only the concepts' names (one per concept),
    the stricter image -> text figure: generic keywords shared by many concepts are not in that pool.
    """
    queries, query_concepts, pool, pool_concepts = concept_texts(pairs)
    emb = encode_texts(list(dict.fromkeys([*queries, *pool])))
    at = {t: i for i, t in enumerate(dict.fromkeys([*queries, *pool]))}
    q_emb, p_emb = emb[[at[t] for t in queries]], emb[[at[t] for t in pool]]
    out = {"hit_rule": "concept", "concepts": len(queries)}
    out |= concept_retrieval_metrics(img, pairs.concepts or [], q_emb, query_concepts, p_emb, pool_concepts)
    names = concept_retrieval_metrics(img, pairs.concepts or [], q_emb, query_concepts, q_emb,
                                      [frozenset([c]) for c in query_concepts])  # fmt: skip
    out |= {f"i2t_names_{k.removeprefix('i2t_')}": v for k, v in names.items() if k.startswith("i2t_")}
    return out
