"""The trainer's hard negatives, gradient caching and torchrun data parallelism on the tiny model."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from tests.helpers.training_runs import checkpoint_weights, train_config
from training.synthetic.shapes import generate_dataset
from training.trainer import finetune


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("ds"), n=48, seed=0, image_size=32).manifest


HARD_NEGATIVE_OPTIONS = {
    "in-batch": {"beta": 0.2, "tau_plus": 0.1},
    "queue": {"queue_size": 32},
    "mochi": {"mochi": True, "mochi_hardest": 4, "mochi_synthetic": 4},
    "perturb": {"perturb_captions": 1},
    "ann": {"ann_mining": True, "ann_k": 3},
    "all": {
        "beta": 0.2, "tau_plus": 0.1, "queue_size": 32, "mochi": True, "mochi_hardest": 4,
        "mochi_synthetic": 4, "perturb_captions": 1, "ann_mining": True, "ann_k": 3,
    },
}  # fmt: skip


@pytest.mark.parametrize("name", list(HARD_NEGATIVE_OPTIONS))
def test_each_hard_negative_method_and_all_combined_train(manifest, tmp_path, name):
    result = finetune(train_config(manifest, tmp_path, hard_negatives=HARD_NEGATIVE_OPTIONS[name]))
    assert result.steps == 6 and all(math.isfinite(h["loss"]) for h in result.history)


def test_hard_negatives_need_the_infonce_family(manifest, tmp_path):
    with pytest.raises(ValueError, match="loss.kind 'clip'"):
        train_config(manifest, tmp_path, loss={"kind": "siglip"}, hard_negatives={"mochi": True})


def test_gradient_caching_gives_the_same_training_as_the_big_batch(manifest, tmp_path):
    plain = finetune(train_config(manifest, tmp_path / "plain"))
    cached = finetune(train_config(manifest, tmp_path / "cached", optim={"chunk_size": 3}))
    assert [h["loss"] for h in cached.history] == pytest.approx([h["loss"] for h in plain.history], abs=1e-5)
    _assert_same_weights(plain.checkpoint, cached.checkpoint)


def _assert_same_weights(path_a, path_b, atol=2e-5, rtol=1e-4, max_step=6 * 1e-3):
    """Equal up to float32 summation order, except where the true gradient is (nearly) zero.

    Adam steps by g / sqrt(v), about ±lr whatever |g| is. Where the true gradient is zero or
    rounding-small (attention key biases cannot change the softmax; a few other entries get
    ~1e-9), the two runs' rounding noise has random signs and Adam turns it into lr-sized steps
    that are not comparable. Such entries are rare and move at most lr x steps (``max_step``),
    so: every element within ``max_step``, and at most 0.1% of each tensor's elements outside
    the float32 tolerance. A real difference in gradients moves most elements. Exact gradient
    equality is tested in test_gradcache / test_distributed.
    """
    a, b = checkpoint_weights(path_a), checkpoint_weights(path_b)
    for name in a:
        if name.endswith("in_proj_bias"):
            d = a[name].shape[0] // 3
            a[name], b[name] = torch.cat([a[name][:d], a[name][2 * d :]]), torch.cat([b[name][:d], b[name][2 * d :]])
        diff = (a[name].float() - b[name].float()).abs()
        off = diff > atol + rtol * b[name].float().abs()
        assert diff.max() <= max_step, f"{name}: max difference {diff.max():.3g} > {max_step}"
        assert off.float().mean() <= 1e-3, f"{name}: {int(off.sum())} of {off.numel()} elements differ"


def test_resume_restores_the_queue_and_momentum_model(manifest, tmp_path):
    over = {"hard_negatives": {"queue_size": 32, "perturb_captions": 1}}
    straight = finetune(train_config(manifest, tmp_path / "a", **over))
    calls = {"n": 0}

    def cancel() -> bool:
        calls["n"] += 1
        return calls["n"] == 3

    cfg = train_config(manifest, tmp_path / "b", **over)
    finetune(cfg, cancel=cancel)
    resumed = finetune(cfg)
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in straight.history], abs=1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, cfg_json: str) -> None:
    from training.config import TrainConfig

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    finetune(TrainConfig.model_validate_json(cfg_json))
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("local_loss", [False, True])
def test_two_gloo_ranks_train_like_one_process_on_the_global_batch(manifest, tmp_path, local_loss):
    over = {"distributed": {"local_loss": local_loss}, "optim": {"steps": 3, "warmup_steps": 1}}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like each rank: a fixed summation order, whatever else loads the machine
    try:
        single = finetune(train_config(manifest, tmp_path / "single", **over))
    finally:
        torch.set_num_threads(threads)
    cfg = train_config(manifest, tmp_path / "ddp", **over)
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(_rank, args=(_free_port(), cfg.model_dump_json()), nprocs=2, start_method=method)
    # Both run single-threaded; the ranks still sum the global batch in another order.
    _assert_same_weights(single.checkpoint, tmp_path / "ddp" / "final.pt", atol=1e-4)
