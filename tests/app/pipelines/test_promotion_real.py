"""The promotion gate on emoji-style manifests: scored by concept, a better model promoted, a worse refused."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from app.db import crud
from app.jobs.handlers.promote import _gate
from app.pipelines.evaluation import evaluate_spec
from crossmodal_kernel.checkpoints import save_checkpoint
from crossmodal_kernel.loading import load_model
from tests.helpers.emoji_folder import fake_emoji
from tests.helpers.service import stack
from training.bootstrap import BootstrapConfig, bootstrap_heads
from training.eval_sets import manifest_pairs

pytestmark = pytest.mark.slow


@pytest.fixture
def service(tmp_path):
    with stack(tmp_path / "data", f"sqlite:///{tmp_path / 'db.sqlite'}", n=0, model_spec="builtin:lit-mini") as s:
        yield s.settings, s.session_factory


def test_the_gate_promotes_the_bootstrapped_model_and_refuses_the_untrained_one(service, tmp_path):
    settings, sf = service
    root = fake_emoji(settings.data_dir / "emoji")
    train = manifest_pairs(root / "train.jsonl", "train")
    loaded = load_model("builtin:lit-mini", "cpu")
    cfg = BootstrapConfig(epochs=30, batch_size=24, lr=5e-3, num_workers=0, feature_cache=str(tmp_path / "cache"))
    bootstrap_heads(loaded, list(zip(train.images, train.texts, strict=True)), cfg, groups=train.concepts)
    better = f"builtin:lit-mini@{save_checkpoint(loaded, tmp_path / 'better.pt')}"
    with sf() as session:
        untrained = crud.create_model(session, "builtin:lit-mini", name="untrained heads")
        trained = crud.create_model(session, better, name="bootstrapped")
        session.commit()
        untrained, trained = session.get(type(untrained), untrained.id), session.get(type(trained), trained.id)
    dataset = str(root / "eval" / "heldout_house-facebook.jsonl")

    report = evaluate_spec(settings, sf, better, dataset, "test")
    assert report["hit_rule"] == "concept" and report["t2i_pool"] == 8 and report["t2i_chance_R@1"] == 1 / 8

    ctx = SimpleNamespace(settings=settings, session_factory=sf, progress=lambda *a, **k: None)
    promote = _gate(ctx, trained, untrained, "t2i_R@1", dataset, "test", force=False)
    assert promote["promote"] and promote["candidate"] > promote["active"]
    assert promote["reports"]["candidate"]["hit_rule"] == "concept"
    refuse = _gate(ctx, untrained, trained, "t2i_R@1", dataset, "test", force=False)
    assert not refuse["promote"] and refuse["candidate"] < refuse["active"]
