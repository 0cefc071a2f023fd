"""Probes of frozen embeddings: a linear probe (logistic regression) and zero-shot classification.

Plain functions over numpy embeddings, like :mod:`training.evaluate`'s metrics; ties rank the
true class last, and an undefined metric is ``None``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression

    from crossmodal_kernel.encoder import Encoder

PROBE_CS = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)  # inverse regularisation strengths swept


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
    train_y_arr, test_y_arr = np.asarray(train_y), np.asarray(test_y)
    if len(train_x) != len(train_y_arr) or len(test_x) != len(test_y_arr):
        raise ValueError("need one label per embedding")
    if len(np.unique(train_y_arr)) < 2:
        raise ValueError("a linear probe needs at least two classes in train")

    rng = np.random.default_rng(seed)
    is_val = np.zeros(len(train_y_arr), dtype=bool)
    for label in np.unique(train_y_arr):
        members = rng.permutation(np.flatnonzero(train_y_arr == label))
        is_val[members[: int(len(members) * val_fraction)]] = True
    fit, val = ~is_val, is_val

    best_c, best_val = 1.0, None
    if val.any() and len(np.unique(train_y_arr[fit])) >= 2:
        for c in sorted(Cs):
            predicted = _fit_probe(train_x[fit], train_y_arr[fit], c).predict(train_x[val])
            acc = float(np.mean(predicted == train_y_arr[val]))
            if best_val is None or acc > best_val:
                best_c, best_val = c, acc
    probe = _fit_probe(train_x, train_y_arr, best_c)
    top1 = float(np.mean(probe.predict(test_x) == test_y_arr)) if len(test_y_arr) else None
    return {"probe_top1": top1, "probe_C": float(best_c), "probe_val_top1": best_val}


def _fit_probe(x: np.ndarray, y: np.ndarray, c: float) -> LogisticRegression:
    # scikit-learn is imported here, not above: the API process imports this module (evaluation sets)
    # and never fits a probe; sklearn's import is 0.6 s of its start.
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

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
    label_ids = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(label_ids) != len(img_emb):
        raise ValueError("need one label per image")
    if len(label_ids) and (label_ids.min() < 0 or label_ids.max() >= len(class_emb)):
        raise ValueError("labels must index rows of class_emb")
    scores = img_emb @ class_emb.T
    true = scores[np.arange(len(label_ids)), label_ids][:, None]
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


def _as_2d(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {a.shape}")
    return a
