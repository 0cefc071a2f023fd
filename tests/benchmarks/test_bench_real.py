"""bench_real.py end to end on a tiny fake emoji folder: every split scored, the section recorded."""

from __future__ import annotations

import pytest

from benchmarks import _real_recipes, _report, bench_real
from tests.helpers.emoji_folder import fake_emoji
from tests.training.test_features import _Loaded, _Tower


@pytest.fixture
def fake_model(monkeypatch) -> list[_Loaded]:
    """A lit-mini-shaped two-tower model with module heads (test:tiny's heads are bare parameters, which a
    LiT bootstrap cannot train on cached features); every load is recorded to count its encodings."""
    loads: list[_Loaded] = []

    def load(spec, device="cpu"):
        loads.append(_Loaded(_Tower()))
        return loads[-1]

    monkeypatch.setattr(bench_real, "load_model", load)
    monkeypatch.setattr(_real_recipes, "load_model", load)
    return loads


def test_bench_real_scores_every_split_and_records_its_section(tmp_path, fake_model, monkeypatch):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n")
    monkeypatch.setattr(_report, "DOC", doc)
    monkeypatch.setattr(_report, "ROOT", tmp_path)
    data = f"{fake_emoji(tmp_path / 'salt0')},{fake_emoji(tmp_path / 'salt1')}"
    result = bench_real.main([
        "--data", data, "--seeds", "0,1",
        "--variants", "plain,default,emoji recipe,emoji recipe + MLP heads (hidden 1024)",
        "--ft-variants", "none", "--epochs", "3", "--analyses", "oracle,image2image", "--num-workers", "0",
        "--feature-cache", str(tmp_path / "cache"),
    ])  # fmt: skip
    runs = result["bootstrap"]["default"]
    assert len(runs) == 4  # 2 salts x 2 seeds
    assert set(runs[0]["metrics"]) == {"a", "b", "c", "d"}
    b = runs[0]["metrics"]["b"]
    assert b["t2i_pool"] == 4 and b["t2i_chance_R@1"] == pytest.approx(1 / 4)
    assert set(b["sets"]) == {"heldout_concepts-apple", "heldout_concepts-google", "heldout_concepts-twitter"}
    assert 0.0 <= b["t2i_R@1"] <= 1.0 and 0.0 <= runs[0]["siblings_share"] <= 1.0
    assert set(result["analyses"]) == {"oracle", "image2image"}
    text = doc.read_text()
    assert "<!-- real-emoji:begin -->" in text and "Real data: emoji" in text
    assert "emoji recipe + MLP heads (hidden 1024)" in text and "Reproduce" in text
    assert (tmp_path / "benchmarks" / "results" / "real-emoji.json").exists()

    # A second run finds every feature in the cache: nothing is encoded again.
    bench_real.main(["--data", data, "--seeds", "0", "--variants", "default", "--ft-variants", "none",
                             "--epochs", "1", "--analyses", "none", "--num-workers", "0", "--no-record",
                             "--feature-cache", str(tmp_path / "cache")])  # fmt: skip
    assert fake_model[-1].model.image_calls == fake_model[-1].model.text_calls == 0


def test_runs_split_by_salt_merge_into_one_recorded_run(tmp_path, fake_model, monkeypatch):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n")
    monkeypatch.setattr(_report, "DOC", doc)
    monkeypatch.setattr(_report, "ROOT", tmp_path)
    parts = []
    for salt in ("salt0", "salt1"):
        out = tmp_path / f"{salt}.json"
        bench_real.main(["--data", str(fake_emoji(tmp_path / salt)), "--seeds", "0,1", "--variants", "plain,default",
                         "--ft-variants", "none", "--epochs", "2", "--analyses", "none", "--num-workers", "0",
                         "--feature-cache", str(tmp_path / "cache"), "--no-record", "--json", str(out)])  # fmt: skip
        parts.append(str(out))
    merged = bench_real.main(["--merge", ",".join(parts)])
    assert len(merged["bootstrap"]["default"]) == 4 and "salt1" in merged["args"]["data"]
    assert "<!-- real-emoji:begin -->" in doc.read_text()


def test_extra_training_rows_reach_only_the_recipes_marked_for_them(tmp_path, fake_model, monkeypatch):
    """--extra-train adds a manifest's rows (openclipart's, say) to the '+ openclipart' recipes' training rows,
    paired with the same recipe without them; a marked recipe without the flag is refused."""
    import json

    import numpy as np
    from PIL import Image

    data = fake_emoji(tmp_path / "salt0")
    extra = tmp_path / "extra"
    (extra / "images").mkdir(parents=True)
    rows = []
    for i in range(5):
        Image.fromarray(np.full((16, 16, 3), 40 * i, dtype=np.uint8)).save(extra / "images" / f"e{i}.png")
        rows.append({"image": f"images/e{i}.png", "text": f"extra {i}", "captions": [f"extra {i}", "kw"],
                     "split": "train", "concept": f"openclipart:e{i}"})  # fmt: skip
    (extra / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    seen: list[int] = []
    fit = _real_recipes.fit_heads

    def counting(image_head, text_head, img, *args, **kwargs):
        seen.append(len(img))
        return fit(image_head, text_head, img, *args, **kwargs)

    monkeypatch.setattr(_real_recipes, "fit_heads", counting)
    common = ["--data", str(data), "--seeds", "0", "--ft-variants", "none", "--epochs", "1", "--analyses", "none",
              "--num-workers", "0", "--no-record", "--feature-cache", str(tmp_path / "cache")]  # fmt: skip
    result = bench_real.main([*common, "--variants", "default,default + openclipart",
                              "--extra-train", str(extra / "manifest.jsonl")])  # fmt: skip
    assert seen == [24, 24 + 5]  # 8 train concepts x 3 houses, then the 5 extra rows beside them
    assert set(result["bootstrap"]) == {"default", "default + openclipart"}
    with pytest.raises(SystemExit, match="--extra-train"):
        bench_real.main([*common, "--variants", "default + openclipart"])


def test_fine_tunes_are_paired_with_what_they_add_to():
    from benchmarks._real_report import _ft_baseline

    of = _ft_baseline({"plain": [], "masked": [], "masked + queue 1024": []})
    assert of("plain") is None and of("masked") == "plain" and of("masked + queue 1024") == "masked"
    assert _ft_baseline({"masked": [], "masked + SimCLR auxiliary": []})("masked + SimCLR auxiliary") is None
