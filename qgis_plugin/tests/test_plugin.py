"""Loading the plugin as QGIS does, the missing-onnxruntime message, and the built zip."""

from __future__ import annotations

import ast
import configparser
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import PLUGIN_DIR, RASTER_CRS, ROOT, points_layer
from qgis.core import QgsApplication, QgsProcessingException
from qgis.gui import QgisInterface


def test_class_factory_init_gui_unload(qgis_iface: QgisInterface) -> None:
    import geosam_qgis

    plugin = geosam_qgis.classFactory(qgis_iface)
    plugin.initGui()
    registry = QgsApplication.processingRegistry()
    assert registry.algorithmById("geosam:segment_parcels") is not None
    plugin.action.setChecked(True)
    assert plugin.dock is not None and not plugin.dock.isHidden()
    assert qgis_iface.mapCanvas().mapTool() is plugin.tool
    plugin.action.setChecked(False)
    assert plugin.dock.isHidden()
    plugin.unload()
    assert registry.providerById("geosam") is None
    assert qgis_iface.mapCanvas().mapTool() is None


def test_missing_onnxruntime_names_the_install_command(
    qgis_iface: QgisInterface,
    qgis_processing: None,
    monkeypatch: pytest.MonkeyPatch,
    scene: Path,
    model_dir: Path,
) -> None:
    import geosam_qgis
    from geosam_qgis.dependencies import deps_dir

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
    qgis_iface.messageBar().clear_messages()
    plugin = geosam_qgis.classFactory(qgis_iface)
    plugin.initGui()
    try:
        plugin.action.setChecked(True)
        assert not plugin.action.isChecked() and plugin.dock is None
        message = plugin.install_offer.problem.message
        command = f"{sys.executable} -m pip install --upgrade --no-deps --target {deps_dir()}"
        assert f"{command} onnxruntime" in message

        import processing

        with pytest.raises(QgsProcessingException, match="pip install --upgrade --no-deps"):
            processing.run(
                "geosam:segment_parcels",
                {
                    "INPUT": str(scene),
                    "MODEL": str(model_dir),
                    "PROMPTS": points_layer([(10.5, 10.5)], RASTER_CRS),
                    "OUTPUT": "memory:",
                },
            )
    finally:
        plugin.unload()


def test_built_zip(tmp_path: Path) -> None:
    """The zip unpacks to one plugin folder with metadata, icon, the runtime, and imports
    nothing called geosam absolutely."""
    archive = tmp_path / "geosam_qgis.zip"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "build_plugin.py"),
            "--build-dir",
            str(tmp_path / "stage"),
            "-o",
            str(archive),
        ],
        check=True,
        capture_output=True,
    )
    with zipfile.ZipFile(archive) as bundle:
        names = bundle.namelist()
        assert {name.split("/")[0] for name in names} == {"geosam_qgis"}
        for required in ("__init__.py", "metadata.txt", "icon.svg", "runtime/model.py"):
            assert f"geosam_qgis/{required}" in names
        metadata = configparser.ConfigParser()
        metadata.read_string(bundle.read("geosam_qgis/metadata.txt").decode())
        general = metadata["general"]
        assert general["qgisMinimumVersion"] == "3.22"
        assert general["version"] and general["icon"] == "icon.svg"
        for name in names:
            if name.endswith(".py"):
                tree = ast.parse(bundle.read(name))
                for node in ast.walk(tree):
                    modules = []
                    if isinstance(node, ast.ImportFrom) and node.level == 0:
                        modules = [node.module or ""]
                    elif isinstance(node, ast.Import):
                        modules = [alias.name for alias in node.names]
                    assert not [m for m in modules if m.split(".")[0] == "geosam"], name
    # the tests run on the same build
    assert (PLUGIN_DIR / "geosam_qgis" / "runtime" / "model.py").is_file()
