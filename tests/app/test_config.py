import re
from pathlib import Path

from app.config import Settings, settings_markdown_table

CONFIG_DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_the_configuration_table_in_docs_matches_the_settings_class():
    text = CONFIG_DOC.read_text()
    found = re.search(r"<!-- config-table:begin -->\n(.*?)\n<!-- config-table:end -->", text, re.S)
    assert found, "docs/configuration.md lost its config-table markers"
    assert found.group(1).strip() == settings_markdown_table().strip(), (
        "docs/configuration.md's table is stale: paste the output of `crossmodal config-table`"
    )


def test_every_setting_reads_its_env_var(monkeypatch, tmp_path):
    monkeypatch.setenv("CROSSMODAL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CROSSMODAL_MAX_K", "50")
    monkeypatch.setenv("CROSSMODAL_LOG_LEVEL", "debug")
    s = Settings()
    assert s.data_dir == tmp_path and s.max_k == 50 and s.log_level == "DEBUG"
    assert s.resolved_database_url == f"sqlite:///{(tmp_path / 'crossmodal.db').resolve()}"
