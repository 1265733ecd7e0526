"""The Diagnostics dialog's report and Copy, and which geosam CLI the plugin finds.

The CLIs are small scripts that answer ``--version`` as click does (``geosam, version X``), so
the report's CLI line is checked without the main venv: QGIS's Python has no geosam CLI.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from qgis.core import Qgis, QgsSettings
from qgis.gui import QgisInterface
from qgis.PyQt.QtWidgets import QApplication

FAKE_CLI = """#!{python}
import sys
assert sys.argv[1:] == ["--version"], sys.argv
print("geosam, version {version}")
"""


def fake_cli(folder: Path, version: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "geosam"
    script.write_text(FAKE_CLI.format(python=sys.executable, version=version))
    script.chmod(0o755)
    return script


@pytest.fixture
def clean_cli_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No setting, no GEOSAM_CLI and a PATH with no geosam, restored afterwards."""
    from geosam_qgis.cli_locator import ENVIRONMENT, SETTING

    monkeypatch.delenv(ENVIRONMENT, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    QgsSettings().remove(SETTING)
    yield
    QgsSettings().remove(SETTING)


def test_cli_found_by_setting_then_environment_then_path(
    clean_cli_setting: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from geosam_qgis.cli_locator import ENVIRONMENT, SETTING, find_geosam_cli

    assert find_geosam_cli() is None
    on_path = fake_cli(tmp_path / "path", "1.0")
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert find_geosam_cli() == str(on_path)
    environment = fake_cli(tmp_path / "env", "2.0")
    monkeypatch.setenv(ENVIRONMENT, str(environment))
    assert find_geosam_cli() == str(environment)
    setting = fake_cli(tmp_path / "setting", "3.0")
    QgsSettings().setValue(SETTING, str(setting))
    assert find_geosam_cli() == str(setting)
    # a setting that names no executable falls back to the next place
    QgsSettings().setValue(SETTING, str(tmp_path / "gone" / "geosam"))
    assert find_geosam_cli() == str(environment)


def test_report_holds_every_item_and_copies(
    qgis_iface: QgisInterface,
    clean_cli_setting: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    model_dir: Path,
) -> None:
    import geosam_qgis
    import numpy as np
    import onnxruntime
    from geosam_qgis.cli_locator import ENVIRONMENT
    from osgeo import gdal

    cli = fake_cli(tmp_path / "cli", "9.9.9")
    monkeypatch.setenv(ENVIRONMENT, str(cli))
    plugin = geosam_qgis.classFactory(qgis_iface)
    plugin.initGui()
    try:
        plugin.action.setChecked(True)
        plugin.dock.model_widget.setFilePath(str(model_dir))
        plugin.dock.diagnostics_button.click()
        dialog = plugin.diagnostics
        assert dialog is not None and dialog.isVisible()
        text = dialog.text_box.toPlainText()
        for line in (
            f"QGIS: {Qgis.QGIS_VERSION}",
            f"Python: {sys.version.split()[0]}",
            f"numpy: {np.__version__}",
            f"GDAL: {gdal.__version__}",
            f"onnxruntime: {onnxruntime.__version__}",
            "execution providers: ",
            "CPUExecutionProvider",
            f"model: {model_dir}",
            'model_type "tiny"',
            'min_onnxruntime "1.12"',
            "onnx_ir_version 8",
            "embedding cache: 0 windows, 0.0 of 256 MiB",
            f"geosam CLI: {cli} (geosam, version 9.9.9)",
        ):
            assert line in text
        dialog.copy_button.click()
        assert QApplication.clipboard().text() == text
        dialog.close()
    finally:
        plugin.unload()


def test_report_without_onnxruntime_or_cli(
    clean_cli_setting: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report a user sends when the panel cannot open: what is missing, said plainly."""
    from geosam_qgis.diagnostics import diagnostics_text

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    text = diagnostics_text("", None)
    assert "onnxruntime: missing" in text
    assert "execution providers: none (no onnxruntime)" in text
    assert "model: none chosen" in text and "embedding cache: not created yet" in text
    assert "geosam CLI: not found (plugin setting geosam/cli_path, environment variable " in text
