"""A settings file for the tests that load one (`trelay.config.settings.load_settings`):
`write` puts the given TOML text in `trelay.toml` under the test's tmp_path."""

from __future__ import annotations

from pathlib import Path


def write(tmp_path: Path, text: str) -> Path:
    """`text` as tmp_path/trelay.toml (UTF-8); its path."""
    path = tmp_path / "trelay.toml"
    path.write_text(text, encoding="utf-8")
    return path
