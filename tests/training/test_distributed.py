"""Two gloo processes on a split batch train exactly like one process on the whole batch."""

from __future__ import annotations

import os
import socket
from functools import partial

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from crossmodal_kernel.distributed import DistInfo, init_distributed, shard_indices
from crossmodal_kernel.loading import load_model
from training.distributed import average_gradients, distributed_clip_loss
from training.gradcache import gradcache_backward
from training.losses import ClipLoss

WORLD_SIZE = 2
B = 8  # global batch: 4 pairs per rank
# (local_loss, gather_with_grad), each wrapped in DDP
DDP_MODES = {"global": (False, True), "local": (True, True), "global-no-grad-gather": (False, False)}


def tiny_model():
    return load_model("test:tiny", "cpu").model.double().train()


def global_batch():
    tokenizer = load_model("test:tiny", "cpu").tokenizer
    images = torch.randn(B, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    tokens = tokenizer([f"{k} blue circles left of a {k % 3} green square" for k in range(B)])
    return images, tokens


def grads(model):
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def _worker(rank, port, out_dir, images, tokens):
    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(WORLD_SIZE),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    info = init_distributed(backend="gloo")
    assert init_distributed() == info, "a second call returns the same group"
    # Strided shards (the order of pairs inside the batch does not change the CLIP loss).
    shard = list(shard_indices(B, info.rank, info.world_size))
    images, tokens = images[shard], tokens[shard]
    results = {"info": info}

    def mean_over_ranks(loss):
        loss = loss.detach().clone()
        dist.all_reduce(loss)
        return loss / info.world_size

    for mode, (local_loss, gather_with_grad) in DDP_MODES.items():
        model = DistributedDataParallel(tiny_model())
        image_features, text_features, logit_scale = model(images, tokens)
        loss = distributed_clip_loss(
            image_features, text_features, logit_scale, local_loss=local_loss, gather_with_grad=gather_with_grad
        )["contrastive_loss"]
        loss.backward()  # DDP averages the gradients over ranks here
        results[mode] = {"rank_loss": loss.detach(), "loss": mean_over_ranks(loss), "grads": grads(model.module)}

    # Gradient caching inside each rank, then one all-reduce instead of DDP.
    model = tiny_model()
    terms = gradcache_backward(
        partial(model.encode_image, normalize=True),
        partial(model.encode_text, normalize=True),
        images,
        tokens,
        partial(distributed_clip_loss, local_loss=True, rank=info.rank, world_size=info.world_size),
        chunk_size=3,
        loss_kwargs={"logit_scale": model.logit_scale.exp()},
    )
    average_gradients(model.parameters())
    results["gradcache-local"] = {"loss": mean_over_ranks(terms["contrastive_loss"]), "grads": grads(model)}
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Run every mode once in two processes. Forked where possible: a spawned process spends
    ~7 s importing torch and open_clip. Each worker first drops to one thread, as DataLoader
    workers do, so the parent's OpenMP pool is never used after the fork."""
    out = tmp_path_factory.mktemp("ranks")
    images, tokens = global_batch()
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(_worker, args=(free_port(), str(out), images, tokens), nprocs=WORLD_SIZE, start_method=method)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD_SIZE)]


@pytest.fixture(scope="module")
def single_process():
    model = tiny_model()
    images, tokens = global_batch()
    image_features, text_features, logit_scale = model(images, tokens)
    loss = ClipLoss(learnable=False)(image_features, text_features, logit_scale)["contrastive_loss"]
    loss.backward()
    return {"loss": loss.detach(), "grads": grads(model)}


def test_workers_joined_a_gloo_group(ranks):
    for r, result in enumerate(ranks):
        assert result["info"] == DistInfo(r, WORLD_SIZE, r, torch.device("cpu"), "gloo")
    assert ranks[0]["info"].is_main and not ranks[1]["info"].is_main


@pytest.mark.parametrize("mode", [*DDP_MODES, "gradcache-local"])
def test_split_batch_matches_one_process(ranks, single_process, mode):
    for result in ranks:
        got = result[mode]
        torch.testing.assert_close(got["loss"], single_process["loss"])
        assert got["grads"].keys() == single_process["grads"].keys()
        for name, want in single_process["grads"].items():
            torch.testing.assert_close(got["grads"][name], want, msg=lambda m, n=name: f"{mode} {n}: {m}")


def test_global_loss_is_the_same_on_every_rank_local_loss_is_a_share(ranks, single_process):
    for result in ranks:
        torch.testing.assert_close(result["global"]["rank_loss"], single_process["loss"])
    local = [result["local"]["rank_loss"] for result in ranks]
    assert not torch.isclose(local[0], local[1])


def test_single_process_fallback_without_torchrun(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    info = init_distributed()
    assert (info.rank, info.world_size, info.local_rank, info.backend) == (0, 1, 0, None)
    assert info.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert info.is_main and not dist.is_initialized()


def test_rank_without_the_rest_of_torchrun_env_is_an_error(monkeypatch):
    for var in ("WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(RuntimeError, match="torchrun"):
        init_distributed()


@pytest.mark.parametrize("local_loss", [False, True])
def test_one_process_loss_is_clip_loss(local_loss):
    g = torch.Generator().manual_seed(0)
    images, texts = (torch.randn(5, 4, generator=g, dtype=torch.float64) for _ in range(2))
    got = distributed_clip_loss(images, texts, torch.tensor(7.0, dtype=torch.float64), local_loss=local_loss)
    want = ClipLoss(learnable=False)(images, texts, torch.tensor(7.0, dtype=torch.float64))
    torch.testing.assert_close(got["contrastive_loss"], want["contrastive_loss"])


def test_local_loss_needs_gather_with_grad():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="gather_with_grad"):
        distributed_clip_loss(x, x, 1.0, local_loss=True, gather_with_grad=False, rank=0, world_size=2)


@pytest.mark.parametrize("n, world_size", [(10, 3), (8, 2), (2, 4), (0, 1)])
def test_shards_are_strided_disjoint_and_cover_everything(n, world_size):
    shards = [list(shard_indices(n, r, world_size)) for r in range(world_size)]
    assert sorted(i for shard in shards for i in shard) == list(range(n))
    assert all(shard == list(range(r, n, world_size)) for r, shard in enumerate(shards))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


@pytest.mark.parametrize("rank, world_size", [(2, 2), (-1, 2), (0, 0)])
def test_shard_indices_rejects_a_bad_rank(rank, world_size):
    with pytest.raises(ValueError):
        shard_indices(4, rank, world_size)
