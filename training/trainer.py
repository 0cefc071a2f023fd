"""Fine-tuning: ``finetune(config, progress, cancel)`` — a plain function that jobs and the CLI call.

Step-based loop with AdamW, linear warmup then cosine decay, gradient clipping,
mixed precision on CUDA, LiT-style tower locking, gradient caching (the loss
sees the whole batch while towers see chunks), hard negatives (in-batch
weighting, a momentum-encoded queue, MoCHi mixing, NegCLIP caption
perturbations, ANN-mined batches), self-supervised image auxiliaries,
torchrun data parallelism with features gathered across ranks, checkpoints
that resume exactly (model, optimizer, scheduler, scaler, step, data position,
queues and RNG), early stopping on validation recall, and WiSE-FT at the end.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from open_clip.hf_model import HFTextEncoder
from torch.utils.data import BatchSampler, DataLoader

from crossmodal_kernel.checkpoints import save_checkpoint
from crossmodal_kernel.distributed import DistInfo, init_distributed
from crossmodal_kernel.encoder import Encoder, trim_padding
from crossmodal_kernel.images import open_image, worker_context
from crossmodal_kernel.loading import LoadedModel, load_model
from training.config import TrainConfig
from training.distributed import average_gradients, distributed_clip_loss, gather_features
from training.evaluate import retrieval_metrics
from training.gradcache import gradcache_backward
from training.pairs import EpochSampler, Pair, PairDataset, load_pairs, train_transform
from training.sources import SourceReport
from training.ssl import ImageSSL

log = logging.getLogger(__name__)

Progress = Callable[[dict], None]


@dataclass
class TrainResult:
    steps: int
    checkpoint: Path | None
    history: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    best_val_r1: float | None = None
    stopped_early: bool = False
    cancelled: bool = False
    skipped_rows: dict = field(default_factory=dict)
    noisy_pairs: dict | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def apply_locks(model: torch.nn.Module, cfg: TrainConfig) -> None:
    """Lock towers through open_clip's own API; projection heads stay trainable."""
    if cfg.lock.image_unlocked_groups is not None:
        # BatchNorm statistics are frozen by set_train_mode instead of open_clip's freeze_bn_stats,
        # which swaps timm's BatchNormAct2d for a plain FrozenBatchNorm2d and so drops its
        # activation: EfficientNet's features collapse (every image matched one caption).
        model.lock_image_tower(unlocked_groups=cfg.lock.image_unlocked_groups, freeze_bn_stats=False)
    if cfg.lock.text_unlocked_layers is not None:
        text = getattr(model, "text", None)
        if isinstance(text, HFTextEncoder) and cfg.lock.text_unlocked_layers > 0:
            _unlock_last_hf_layers(text, cfg.lock.text_unlocked_layers)
        else:
            model.lock_text_tower(unlocked_layers=cfg.lock.text_unlocked_layers)


def _unlock_last_hf_layers(text: HFTextEncoder, n: int) -> None:
    """Freeze an HF text tower except its last ``n`` transformer layers (and the projection).

    open_clip's own partial lock needs a per-architecture table entry that BERT-family
    models (MiniLM included) lack, so the layer list is found structurally here.
    """
    body = getattr(text.transformer, "encoder", text.transformer)
    layers = next((getattr(body, a) for a in ("layer", "layers", "h") if hasattr(body, a)), None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ValueError(f"cannot find the layer list of {type(text.transformer).__name__} to unlock")
    if n > len(layers):
        raise ValueError(f"text_unlocked_layers={n} but the text tower has {len(layers)} layers")
    text.transformer.requires_grad_(False)
    for layer in list(layers)[-n:]:
        layer.requires_grad_(True)


def set_train_mode(model: torch.nn.Module, cfg: TrainConfig) -> None:
    """Train mode only where training happens.

    A fully locked subtree runs as at inference (a frozen feature extractor, as in LiT):
    its dropout off and its BatchNorm on running statistics. Otherwise a tower whose
    heads were fitted on clean features sees different ones in training (on the
    synthetic world, dropout alone lifted the loss of a good model from 0.06 to 5).
    ``lock.freeze_bn_stats`` keeps every BatchNorm on its statistics, and
    ``optim.dropout`` decides the unlocked layers' dropout.
    """
    model.train()
    for module in model.modules():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            module.eval()
        elif cfg.lock.freeze_bn_stats and isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
        elif not cfg.optim.dropout and isinstance(module, torch.nn.Dropout):
            module.eval()


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # No weight decay on gains, biases and scalars (the logit scale), as in CLIP training.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "logit_" in name else decay).append(p)
    if not decay and not no_decay:
        raise ValueError("every parameter is locked: unlock something (see `lock` in the config)")
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.optim.lr,
    )


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def make_loss(cfg: TrainConfig, model: torch.nn.Module) -> tuple[torch.nn.Module, Callable[[], dict]]:
    """The loss module and a function giving the temperature terms it should use this step.

    A model that carries its own logit scale (and, for SigLIP, bias) keeps training
    it; a model without a SigLIP bias gets the loss's own, initialised for the batch size.
    Any hard-negative option selects the hard-negative InfoNCE, which with beta = tau+ = 0
    is exactly CLIP's loss and takes the extra negatives.
    """
    from training.losses import ClipLoss, HardNegativeClipLoss, SigLipLoss

    scale = getattr(model, "logit_scale", None)
    bias = getattr(model, "logit_bias", None)
    if cfg.loss.kind == "siglip":
        if scale is not None and bias is not None:
            return SigLipLoss(learnable=False), lambda: {"logit_scale": scale.exp(), "logit_bias": bias}
        return SigLipLoss.for_batch_size(cfg.optim.batch_size), dict
    hn = cfg.hard_negatives
    make = functools.partial(HardNegativeClipLoss, hn.beta, hn.tau_plus) if hn.enabled else ClipLoss
    if scale is not None:
        return make(learnable=False), lambda: {"logit_scale": scale.exp()}
    return make(), dict


def _rng_state() -> dict:
    return {
        "torch": torch.random.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_state(state: dict) -> None:
    torch.random.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_atomic(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def embed_pairs(loaded: LoadedModel, pairs: list[Pair], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    encoder = Encoder(loaded, batch_size=batch_size)
    img = np.concatenate(
        [
            encoder.encode_images([open_image(p.image) for p in pairs[i : i + batch_size]])
            for i in range(0, len(pairs), batch_size)
        ]
    )
    return img, encoder.encode_texts([p.text for p in pairs])


def evaluate_recall(loaded: LoadedModel, pairs: list[Pair], batch_size: int = 64) -> dict:
    """Retrieval metrics on ``pairs``; a result with the query's exact caption counts as a hit."""
    img, txt = embed_pairs(loaded, pairs, batch_size)
    return retrieval_metrics(img, txt, list(range(len(pairs))), keys=[p.text for p in pairs])


def drop_noisy_pairs(loaded: LoadedModel, pairs: list[Pair], fraction: float) -> tuple[list[Pair], dict]:
    """Score every pair with the starting model; drop the worst ``fraction`` (see ``training.noisy``)."""
    from training.noisy import relative_scores, select_noisy

    img, txt = embed_pairs(loaded, pairs)
    report = select_noisy(relative_scores(img, txt), fraction)
    dropped = set(report.dropped)
    examples = [f"{pairs[i].image} | {pairs[i].text}" for i in report.dropped]
    log.info("dropped %d of %d pairs as likely mismatched", len(dropped), len(pairs))
    kept = [p for i, p in enumerate(pairs) if i not in dropped]
    return kept, {**report.summary(examples), "dropped_indices": report.dropped}


def _wise_ft(model: torch.nn.Module, base: dict[str, torch.Tensor], alpha: float) -> None:
    """WiSE-FT (Wortsman et al., 2022): interpolate every float weight between base and fine-tuned."""
    if alpha >= 1.0:
        return
    state = model.state_dict()
    for name, value in state.items():
        if value.is_floating_point() and name in base:
            value.copy_((1 - alpha) * base[name].to(value.device) + alpha * value)


class _RankBatches(torch.utils.data.Sampler[list[int]]):
    """Rank r's slice ``batch[r::W]`` of every global batch: the ranks together see the global batch."""

    def __init__(self, batches, rank: int, world_size: int):
        self.batches, self.rank, self.world_size = batches, rank, world_size

    def __iter__(self):
        for batch in self.batches:
            yield batch[self.rank :: self.world_size]

    def __len__(self) -> int:
        return len(self.batches)


def _collate(tokenizer, model, with_text: bool):
    """``(views, tokens | None, texts)``: one (N, 3, H, W) tensor per augmented view."""

    def collate(batch):
        batch = [b for b in batch if b is not None]
        if not batch:
            return None
        views = [torch.stack([b[0][v] for b in batch]) for v in range(len(batch[0][0]))]
        texts = [b[1] for b in batch]
        tokens = trim_padding(model, tokenizer(texts)) if with_text else None
        return views, tokens, texts

    return collate


class _HardNegatives:
    """The per-step machinery of the hard-negative options that need state: queue, MoCHi, perturbations."""

    def __init__(self, cfg: TrainConfig, model: torch.nn.Module, embed_dim: int, device: torch.device):
        from training.losses import FeatureQueue
        from training.losses.moco import MomentumEncoder

        self.cfg = cfg.hard_negatives
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.momentum = self.image_queue = self.text_queue = None
        if self.cfg.queue_size:
            self.momentum = MomentumEncoder(model, momentum=self.cfg.queue_momentum).to(device)
            self.image_queue = FeatureQueue(self.cfg.queue_size, embed_dim).to(device)
            self.text_queue = FeatureQueue(self.cfg.queue_size, embed_dim).to(device)

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.get_state(),
            "rng": self.rng.bit_generator.state,
            "momentum": self.momentum.state_dict() if self.momentum else None,
            "image_queue": self.image_queue.state_dict() if self.image_queue else None,
            "text_queue": self.text_queue.state_dict() if self.text_queue else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.rng.bit_generator.state = state["rng"]
        if self.momentum:
            self.momentum.load_state_dict(state["momentum"])
            self.image_queue.load_state_dict(state["image_queue"])
            self.text_queue.load_state_dict(state["text_queue"])

    def perturbed(self, texts: list[str]) -> list[str]:
        from training.negatives import perturbation_negatives

        if not self.cfg.perturb_captions:
            return []
        return perturbation_negatives(texts, self.rng, per_caption=self.cfg.perturb_captions)

    def queue_kwargs(self) -> dict:
        if not self.momentum:
            return {}
        return {"extra_text_features": self.text_queue.features(), "extra_image_features": self.image_queue.features()}

    def mochi(self, img: torch.Tensor, txt: torch.Tensor) -> dict:
        from training.negatives import batch_mixed_negatives

        if not self.cfg.mochi:
            return {}
        return batch_mixed_negatives(
            img.detach(),
            txt.detach(),
            generator=self.generator,
            n_hardest=self.cfg.mochi_hardest,
            n_synth=self.cfg.mochi_synthetic,
        )

    @torch.no_grad()
    def after_step(self, model: torch.nn.Module, images: torch.Tensor, tokens: torch.Tensor, dist_info: DistInfo):
        """Encode the batch with the momentum model, enqueue the (gathered) keys, then follow the model."""
        if not self.momentum:
            return
        keys_img = self.momentum.module.encode_image(images, normalize=True)
        keys_txt = self.momentum.module.encode_text(tokens, normalize=True)
        if dist_info.world_size > 1:
            keys_img, keys_txt = gather_features(
                keys_img, keys_txt, gather_with_grad=False, rank=dist_info.rank, world_size=dist_info.world_size
            )
        self.image_queue.enqueue(keys_img)
        self.text_queue.enqueue(keys_txt)
        self.momentum.update(model)


def _mined_batches(loaded: LoadedModel, pairs: list[Pair], cfg: TrainConfig, epoch: int, start: int):
    """ANN mining: each image's hardest non-matching captions, composed into shared batches."""
    from training.mining import HardNegativeBatchSampler, mine_hard_negatives

    img, txt = embed_pairs(loaded, pairs)
    captions = [p.text for p in pairs]
    mined = mine_hard_negatives(
        img, txt, anchor_keys=captions, candidate_keys=captions, k=cfg.hard_negatives.ann_k,
        margin=cfg.hard_negatives.ann_margin,
    )  # fmt: skip
    return HardNegativeBatchSampler(
        mined, cfg.optim.batch_size, seed=cfg.seed, epoch=epoch, drop_last=True, start=start
    )


def finetune(
    cfg: TrainConfig,
    progress: Progress | None = None,
    cancel: Callable[[], bool] | None = None,
) -> TrainResult:
    """Fine-tune ``cfg.model`` on ``cfg.data``; resumes from ``output_dir`` when a checkpoint is there.

    Under torchrun every rank runs this; rank 0 evaluates, reports and writes files.
    """
    if cfg.data.manifest is None:
        raise ValueError("data.manifest is required (or run `crossmodal finetune --from-db`)")
    dist_info = init_distributed()
    seed_everything(cfg.seed)
    world, rank = dist_info.world_size, dist_info.rank
    if cfg.optim.batch_size % world:
        raise ValueError(f"batch_size {cfg.optim.batch_size} must divide evenly across {world} ranks")
    if world > 1 and cfg.hard_negatives.perturb_captions:
        raise ValueError("hard_negatives.perturb_captions is not supported under torchrun yet")
    out = Path(cfg.output_dir)
    state_path = out / "checkpoints" / "last.pt"
    report = SourceReport()
    image_only = cfg.ssl.image_only
    train_pairs, val_pairs = load_pairs(
        cfg.data.manifest, cfg.data.val_fraction, cfg.data.split_column, report, images_only=image_only
    )
    if image_only:
        val_pairs = []  # no captions to measure retrieval with
    if len(train_pairs) < cfg.optim.batch_size:
        raise ValueError(f"{len(train_pairs)} training pairs is fewer than one batch of {cfg.optim.batch_size}")
    loaded = load_model(cfg.model, dist_info.device if world > 1 else cfg.device)
    model, device = loaded.model, loaded.device
    noisy = None
    if cfg.data.drop_noisy_fraction:
        train_pairs, noisy = drop_noisy_pairs(loaded, train_pairs, cfg.data.drop_noisy_fraction)
        if dist_info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            (out / "noisy_pairs.json").write_text(json.dumps(noisy, indent=2))
    base_state = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
    apply_locks(model, cfg)
    loss_fn, temperature = make_loss(cfg, model)
    loss_fn.to(device)
    ssl = ImageSSL(cfg.ssl, loaded.embed_dim, model.visual).to(device) if cfg.ssl.kind else None
    hard = _HardNegatives(cfg, model, loaded.embed_dim, device)
    optimizer = make_optimizer(model, cfg)
    loss_params = [p for p in loss_fn.parameters() if p.requires_grad]
    if loss_params:
        optimizer.add_param_group({"params": loss_params, "weight_decay": 0.0})
    if ssl is not None:
        optimizer.add_param_group({"params": ssl.trainable_parameters(), "weight_decay": cfg.optim.weight_decay})
    params = [p for g in optimizer.param_groups for p in g["params"]]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(cfg.optim.warmup_steps, cfg.optim.steps))
    use_amp = cfg.optim.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    pp = model.visual.preprocess_cfg
    dataset = PairDataset(
        train_pairs,
        train_transform(cfg.augment, loaded.image_size, pp["mean"], pp["std"]),
        cfg.seed,
        views=2 if ssl is not None else 1,
    )
    result = TrainResult(steps=0, checkpoint=None, skipped_rows=dict(report.skipped), noisy_pairs=noisy)
    step, epoch, position, best, stale = 0, 0, 0, -1.0, 0  # position: global batches done this epoch
    if state_path.exists():
        ckpt = torch.load(state_path, map_location="cpu", weights_only=False)
        if ckpt["config"] != json.loads(cfg.model_dump_json()):
            raise ValueError(f"{state_path} was written by another configuration; use a new output_dir")
        model.load_state_dict(ckpt["model"])
        loss_fn.load_state_dict(ckpt["loss"])
        if ssl is not None:
            ssl.load_state_dict(ckpt["ssl"])
        hard.load_state_dict(ckpt["hard_negatives"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        step, epoch, position = ckpt["step"], ckpt["epoch"], ckpt["position"]
        best, stale = ckpt["best"], ckpt["stale"]
        result.history, result.evals = ckpt["history"], ckpt["evals"]
        _set_rng_state(ckpt["rng"])
        log.info("resumed from %s at step %d", state_path, step)

    def save_state() -> None:
        if not dist_info.is_main:
            return
        _save_atomic(
            {
                "config": json.loads(cfg.model_dump_json()),
                "model": model.state_dict(),
                "loss": loss_fn.state_dict(),
                "ssl": ssl.state_dict() if ssl is not None else None,
                "hard_negatives": hard.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "step": step,
                "epoch": epoch,
                "position": position,
                "best": best,
                "stale": stale,
                "history": result.history,
                "evals": result.evals,
                "rng": _rng_state(),
            },
            state_path,
        )

    def autocast():
        return torch.autocast(device_type=device.type, enabled=use_amp)

    def contrastive(img: torch.Tensor, txt_all: torch.Tensor, n_texts: int, **kwargs) -> dict:
        """The cross-modal loss on the (gathered) global batch, with any extra negatives."""
        txt, extra = txt_all[:n_texts], txt_all[n_texts:]
        if world > 1 and cfg.distributed.local_loss:
            return distributed_clip_loss(img, txt, kwargs["logit_scale"], local_loss=True, rank=rank, world_size=world)
        if world > 1:
            img, txt = gather_features(
                img, txt, gather_with_grad=cfg.distributed.gather_with_grad, rank=rank, world_size=world
            )
        if len(extra):
            queued = kwargs.pop("extra_text_features", None)
            kwargs["extra_text_features"] = extra if queued is None else torch.cat([extra, queued])
        return loss_fn(img, txt, **kwargs, **hard.mochi(img, txt))

    t_start, samples = time.perf_counter(), 0
    bs = cfg.optim.batch_size
    done = step >= cfg.optim.steps
    while not done:
        dataset.epoch = epoch
        if cfg.hard_negatives.ann_mining:
            global_batches = _mined_batches(loaded, train_pairs, cfg, epoch, start=position)
        else:
            global_batches = BatchSampler(
                EpochSampler(len(dataset), cfg.seed, epoch, start=position * bs), bs, drop_last=True
            )
        loader = DataLoader(
            dataset,
            batch_sampler=_RankBatches(global_batches, rank, world),
            num_workers=cfg.data.num_workers,
            collate_fn=_collate(loaded.tokenizer, model, with_text=not image_only),
            multiprocessing_context=worker_context(cfg.data.num_workers),
        )
        for batch in loader:
            position += 1
            if batch is None or len(batch[0][0]) < 2:
                continue
            set_train_mode(model, cfg)
            views = [v.to(device, non_blocking=True) for v in batch[0]]
            tokens = batch[1].to(device, non_blocking=True) if batch[1] is not None else None
            optimizer.zero_grad(set_to_none=True)
            terms: dict[str, torch.Tensor] = {}
            if not image_only:
                n_texts = len(tokens)
                perturbed = hard.perturbed(batch[2])
                all_tokens = tokens
                if perturbed:
                    extra = trim_padding(model, loaded.tokenizer(perturbed)).to(device)
                    width = max(tokens.shape[1], extra.shape[1])
                    pad = torch.nn.functional.pad
                    all_tokens = torch.cat(
                        [pad(tokens, (0, width - tokens.shape[1])), pad(extra, (0, width - extra.shape[1]))]
                    )
                kwargs = {**temperature(), **hard.queue_kwargs()}
                loss_on = functools.partial(contrastive, n_texts=n_texts)
                terms.update(
                    gradcache_backward(
                        functools.partial(model.encode_image, normalize=True),
                        functools.partial(model.encode_text, normalize=True),
                        views[0],
                        all_tokens,
                        loss_on,
                        chunk_size=cfg.optim.chunk_size or max(len(views[0]), len(all_tokens)),
                        loss_kwargs=kwargs,
                        autocast=autocast,
                        scaler=scaler if use_amp else None,
                    )
                )
            if ssl is not None:
                with autocast():
                    ssl_terms = ssl(model.visual, views[0], views[1])
                scaler.scale(sum(ssl_terms.values())).backward()
                terms.update({k: v.detach() for k, v in ssl_terms.items()})
            loss = sum(v for k, v in terms.items() if k.endswith("_loss"))
            if world > 1:
                average_gradients(params, world)
            if cfg.optim.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
            lr = optimizer.param_groups[0]["lr"]  # the rate this step used
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            if ssl is not None:
                ssl.after_step(model.visual, step, cfg.optim.steps)
            if tokens is not None:
                hard.after_step(model, views[0], tokens, dist_info)
            samples += len(views[0]) * world
            elapsed = time.perf_counter() - t_start
            rate = samples / elapsed if elapsed > 0 else 0.0
            entry = {
                "step": step,
                "loss": float(loss),
                **{k: float(v) for k, v in terms.items()},
                "lr": lr,
                "samples_per_s": rate,
                "eta_s": (cfg.optim.steps - step) * bs / rate if rate else None,
            }
            result.history.append(entry)
            if progress and dist_info.is_main:
                progress({"total": cfg.optim.steps, **entry})
            if val_pairs and (step % cfg.eval_every == 0 or step == cfg.optim.steps):
                model.eval()
                metrics = {"step": step, **evaluate_recall(loaded, val_pairs)}
                result.evals.append(metrics)
                if metrics["t2i_R@1"] > best:
                    best, stale = metrics["t2i_R@1"], 0
                else:
                    stale += 1
                if cfg.early_stopping_patience and stale >= cfg.early_stopping_patience:
                    result.stopped_early = done = True
            if step % cfg.checkpoint_every == 0:
                save_state()
            if step >= cfg.optim.steps:
                done = True
            if cancel and cancel():
                save_state()
                result.cancelled = done = True
            if done:
                break
        else:
            epoch, position = epoch + 1, 0

    result.steps, result.best_val_r1 = step, (best if best >= 0 else None)
    if result.cancelled:
        return result
    _wise_ft(model, base_state, cfg.wise_ft_alpha)
    model.eval()
    if dist_info.is_main:
        result.checkpoint = save_checkpoint(loaded, out / "final.pt", train_result={"steps": step})
        summary = {**asdict(result), "checkpoint": str(result.checkpoint)}
        (out / "result.json").write_text(json.dumps(summary, indent=2, default=str))
    return result
