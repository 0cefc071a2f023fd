"""The ``crossmodal`` command line, end to end on SQLite with the tiny model."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from app.cli import app
from app.config import get_settings, settings_markdown_table
from app.db.session import current_revision, head_revision

runner = CliRunner()


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSMODAL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CROSSMODAL_MODEL_SPEC", "test:tiny")
    monkeypatch.setenv("CROSSMODAL_DEVICE", "cpu")
    monkeypatch.setenv("CROSSMODAL_NUM_WORKERS", "0")
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def run(*args: str):
    result = runner.invoke(app, list(args))
    return result


def test_config_table():
    result = run("config-table")
    assert result.exit_code == 0 and result.output.strip() == settings_markdown_table().strip()


def test_db_upgrade_then_synth_then_ingest_twice(env):
    assert run("db", "upgrade").exit_code == 0
    assert current_revision(get_settings().resolved_database_url) == head_revision()

    result = run("synth", str(env / "ds"), "--n", "20", "--image-size", "32")
    assert result.exit_code == 0, result.output
    manifest = env / "ds" / "manifest.csv"
    assert manifest.is_file()

    first = run("ingest", str(manifest))
    assert first.exit_code == 0, first.output
    assert "items added:      20" in first.output and "image index published" in first.output
    again = run("ingest", str(manifest))
    assert again.exit_code == 0 and "items added:      0" in again.output
    assert "already present:  20" in again.output


def test_ingest_errors_are_messages_not_tracebacks(env):
    missing = run("ingest", str(env / "nope"))
    assert missing.exit_code == 2 and "crossmodal db upgrade" in missing.output
    assert run("db", "upgrade").exit_code == 0
    missing = run("ingest", str(env / "nope"))
    assert missing.exit_code == 2 and "no such folder or manifest" in missing.output
    assert "Traceback" not in missing.output


def _finetune_config(env, data: dict, optim: dict, **extra):
    """A fine-tune YAML for ``test:tiny`` on CPU, fully unlocked, writing to ``env/run``."""
    import yaml

    config = env / "ft.yaml"
    raw = {
        "model": "test:tiny",
        "device": "cpu",
        "output_dir": str(env / "run"),
        "data": {**data, "split_column": "split", "num_workers": 0},
        "lock": {"image_unlocked_groups": None, "text_unlocked_layers": None},
        "optim": optim,
        **extra,
    }
    config.write_text(yaml.safe_dump(raw))
    return config


def test_finetune_registers_a_candidate_and_evaluate_reports(env):
    import json

    from app.db.models import Model
    from app.db.session import make_engine, make_session_factory

    assert run("db", "upgrade").exit_code == 0
    assert run("synth", str(env / "ds"), "--n", "40", "--image-size", "32").exit_code == 0
    config = _finetune_config(
        env, {"manifest": str(env / "ds" / "manifest.csv")}, {"steps": 4, "batch_size": 8, "warmup_steps": 1},
        eval_every=2,
    )  # fmt: skip
    result = run("finetune", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert "registered candidate model #1" in result.output
    with make_session_factory(make_engine(get_settings().resolved_database_url))() as s:
        row = s.get(Model, 1)
        assert row.status == "candidate" and row.spec == f"test:tiny@{env / 'run' / 'final.pt'}"

    out = env / "report.json"
    result = run("evaluate", "--model", row.spec, "--dataset", str(env / "ds"), "--json", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["model"] == row.spec and 0 <= report["t2i_R@1"] <= 1 and "binding_acc" in report
    assert "R@1" in result.output


def test_finetune_with_a_bad_config_is_a_message(env, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: test:tiny\noptim: {stepz: 3}\n")
    result = run("finetune", "--config", str(bad))
    assert result.exit_code == 2 and "error:" in result.output and "Traceback" not in result.output


def test_delete_and_reindex(env):
    assert run("db", "upgrade").exit_code == 0
    assert run("synth", str(env / "ds"), "--n", "20", "--image-size", "32").exit_code == 0
    assert run("ingest", str(env / "ds" / "manifest.csv")).exit_code == 0
    result = run("delete", "1", "2", "--external-id", "000005")
    assert result.exit_code == 0 and "deleted 3 item(s)" in result.output
    assert "deleted 0 item(s)" in run("delete", "1").output  # already gone
    result = run("reindex")
    assert result.exit_code == 0 and "image index published" in result.output
    from app.db import crud
    from app.db.session import make_engine, make_session_factory

    with make_session_factory(make_engine(get_settings().resolved_database_url))() as s:
        assert crud.get_active_indexes(s, crud.get_active_model(s).id)["image"].ntotal == 17


def test_finetune_from_the_database_items(env):

    assert run("db", "upgrade").exit_code == 0
    assert run("synth", str(env / "ds"), "--n", "40", "--image-size", "32").exit_code == 0
    assert run("ingest", str(env / "ds" / "manifest.csv")).exit_code == 0
    config = _finetune_config(env, {}, {"steps": 2, "batch_size": 8, "warmup_steps": 1})
    assert run("finetune", "--config", str(config)).exit_code == 2  # no manifest and no --from-db
    result = run("finetune", "--config", str(config), "--from-db")
    assert result.exit_code == 0, result.output
    assert "exported 40 image-text pairs" in result.output and "registered candidate model" in result.output
    first = (env / "run" / "db-pairs.jsonl").read_text().splitlines()[0]
    assert '"split"' in first and '"image"' in first


def test_embed_command_finishes_what_ingest_left(env, monkeypatch):
    import index.embed

    assert run("db", "upgrade").exit_code == 0
    assert run("synth", str(env / "ds"), "--n", "12", "--image-size", "32").exit_code == 0

    def killed(*a, **k):
        raise KeyboardInterrupt("killed")

    with monkeypatch.context() as patch:
        patch.setattr(index.embed, "embed_texts", killed)
        assert run("ingest", str(env / "ds" / "manifest.csv")).exit_code != 0
    result = run("embed")
    assert result.exit_code == 0, result.output
    assert "text embeddings added: 12" in result.output and "text index published" in result.output


def test_serve_on_an_unmigrated_database_says_what_to_do(env):
    result = run("serve")
    assert result.exit_code == 2 and "crossmodal db upgrade" in result.output


def test_bootstrap_with_synonyms_says_how_to_get_wordnet(env, monkeypatch):
    monkeypatch.setenv("CROSSMODAL_WORDNET_DIR", str(env / "no-wordnet"))
    monkeypatch.setattr("training.thesaurus.candidate_dirs", lambda: [env / "no-wordnet"])
    assert run("db", "upgrade").exit_code == 0
    assert run("synth", str(env / "ds"), "--n", "12", "--image-size", "32").exit_code == 0
    result = run("bootstrap", str(env / "ds" / "manifest.csv"), "--epochs", "1", "--synonym-wordings", "2")
    assert result.exit_code != 0
    assert "apt-get install wordnet-base" in result.output and "Traceback" not in result.output


def test_bootstrap_options_reach_the_recipe(env, monkeypatch):
    """--feature-dropout (the emoji recipe's opt-in) and --image-views reach BootstrapConfig; an
    out-of-range dropout is refused before anything trains."""
    import app.pipelines.bootstrap

    seen = []

    def capture(settings, sf, manifest, base, cfg):
        seen.append(cfg)
        raise ValueError("captured")

    monkeypatch.setattr(app.pipelines.bootstrap, "bootstrap_model", capture)
    assert run("db", "upgrade").exit_code == 0
    manifest = str(env / "manifest.csv")
    result = run("bootstrap", manifest, "--feature-dropout", "0.5", "--image-views", "2")
    assert "captured" in result.output and "Traceback" not in result.output
    assert seen[0].feature_dropout == 0.5 and seen[0].image_views == 2
    assert run("bootstrap", manifest).exit_code != 0 and seen[1].feature_dropout == 0.0
    refused = run("bootstrap", manifest, "--feature-dropout", "1.5")
    assert refused.exit_code == 2 and len(seen) == 2


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_hands_uvicorn_the_keep_alive_setting_in_every_mode(env, monkeypatch, workers):
    """The keep-alive timeout outlasts clients' idle expiry on every path (a server closing an idle
    connection as a client reuses it resets that request: the burst test's dropped connections)."""
    import uvicorn

    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    monkeypatch.setenv("CROSSMODAL_KEEP_ALIVE_SECONDS", "90")
    assert run("db", "upgrade").exit_code == 0
    get_settings.cache_clear()
    result = run("serve", "--no-worker", "--workers", workers)
    assert result.exit_code == 0, result.output
    assert len(calls) == 1 and calls[0]["timeout_keep_alive"] == 90


def test_a_worker_for_an_unknown_kind_says_which_kinds_exist(env):
    assert run("db", "upgrade").exit_code == 0
    result = run("worker", "--kinds", "ingest,fine-tune")
    assert result.exit_code != 0 and "unknown job kinds ['fine-tune']" in result.output
    assert "finetune" in result.output


def test_datasets_openclipart_renders_a_folder_and_says_what_it_skipped(env, monkeypatch):
    import shutil

    if shutil.which("rsvg-convert") is None:
        pytest.skip("apt-get install librsvg2-bin")
    from tests.helpers.openclipart import svg, write_svg

    source = env / "svg"
    write_svg(source, "food/beer.svg", svg("Cold Beer", keywords=("food",)))
    write_svg(source, "food/cake.svg", svg("Cake"))
    write_svg(source, "food/broken.svg", "<svg><rect")
    result = run("datasets", "openclipart", str(env / "oc"), "--source", str(source), "--size", "32")
    assert result.exit_code == 0, result.output
    assert "2 of 3 drawings" in result.output and "render_failed 1" in result.output
    assert (env / "oc" / "manifest.jsonl").read_text().count("\n") == 2
    monkeypatch.setattr("training.openclipart.SOURCE_DIRS", (env / "nothing",))
    monkeypatch.delenv("CROSSMODAL_OPENCLIPART_DIR", raising=False)
    missing = run("datasets", "openclipart", str(env / "oc2"))
    assert missing.exit_code != 0 and "apt-get install openclipart-svg" in missing.output
    assert "Traceback" not in missing.output
