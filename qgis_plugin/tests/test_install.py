"""Installing onnxruntime from the plugin: the command, sys.path, the version check, and the
install task running the plugin's real command: QGIS's Python (the Python these tests run in)
``-m pip install`` into a temporary deps folder.

The install tests need the package index this machine's pip is configured for (pip's cache
makes a repeated run quick); without it, the impossible-version test still passes and the
install itself fails with pip's message. onnxruntime is hidden by an import hook that finds it
only in the deps folder, which is what a QGIS without onnxruntime looks like to the plugin.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from conftest import RASTER_CRS, model_variant, points_layer, wait_for
from qgis.core import QgsApplication, QgsProcessingException, QgsProject, QgsRasterLayer
from qgis.gui import QgisInterface

# pip resolves and copies (or downloads) one wheel; a cold cache takes longer than a warm one.
PIP_TIMEOUT = 600.0


class OnlyIn(importlib.abc.MetaPathFinder):
    """Finds onnxruntime only in ``folder``: elsewhere it is missing."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def find_spec(
        self, name: str, path: object, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name != "onnxruntime":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, [str(self.folder)])
        if spec is None:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return spec


@pytest.fixture
def deps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary deps folder in place of the profile's; sys.path restored afterwards."""
    import geosam_qgis.dependencies as dependencies
    import geosam_qgis.installer as installer

    folder = tmp_path / "profile" / "geosam" / "deps"
    for module in (dependencies, installer):
        monkeypatch.setattr(module, "deps_dir", lambda: folder)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield folder


def test_install_command_and_sys_path(deps: Path) -> None:
    from geosam_qgis.dependencies import install_command, python_executable, use_deps

    assert Path(python_executable()).name.startswith("python")
    assert install_command("1.12", deps) == [
        python_executable(),
        "-m",
        "pip",
        "install",
        "--upgrade",
        "--no-deps",
        "--target",
        str(deps),
        "onnxruntime>=1.12",
    ]
    assert install_command(None, deps)[-1] == "onnxruntime"
    use_deps(deps)
    use_deps(deps)
    assert sys.path[0] == str(deps) and sys.path.count(str(deps)) == 1


def test_version_check_from_the_manifest(model_dir: Path, tmp_path: Path, deps: Path) -> None:
    """The export's minimum (1.12 for IR 8, opset 17) passes; a model asking for more than
    QGIS has gets the message with the command that installs it."""
    from geosam_qgis.dependencies import onnxruntime_problem, version_key

    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["min_onnxruntime"] == "1.12" and manifest["onnx_ir_version"] == 8
    assert onnxruntime_problem(str(model_dir)) is None
    assert version_key("1.10.0") > version_key("1.9") and version_key("1.17.3") >= (1, 17)

    newer = model_variant(model_dir, tmp_path / "newer", {"min_onnxruntime": "99.0"})
    problem = onnxruntime_problem(str(newer))
    assert problem is not None and problem.restart and problem.minimum == "99.0"
    assert "needs onnxruntime 99.0 or newer" in problem.message
    assert f"--target {deps} 'onnxruntime>=99.0'" in problem.message


def test_install_then_load_without_restart(
    qgis_iface: QgisInterface,
    deps: Path,
    monkeypatch: pytest.MonkeyPatch,
    raster_layer: QgsRasterLayer,
    model_dir: Path,
    project: QgsProject,
) -> None:
    """pip really installs onnxruntime, alone, into the deps folder; the model loads from
    there, and numpy stays QGIS's own (a numpy 2 there would shadow the one GDAL is built on)."""
    import geosam_qgis

    monkeypatch.delitem(sys.modules, "onnxruntime")
    monkeypatch.setattr(sys, "meta_path", [OnlyIn(deps), *sys.meta_path])
    plugin = geosam_qgis.classFactory(qgis_iface)
    plugin.initGui()
    try:
        plugin.action.setChecked(True)
        assert plugin.dock is None and plugin.install_offer is not None
        assert "geosam needs the onnxruntime package" in plugin.install_offer.problem.message
        plugin.install_offer.install()
        wait_for(lambda: plugin.dock is not None, PIP_TIMEOUT)
        assert (deps / "onnxruntime" / "__init__.py").is_file()
        packages = {path.name for path in deps.iterdir() if not path.name.endswith(".dist-info")}
        assert packages <= {"onnxruntime", "bin"}, packages
        assert sys.modules["onnxruntime"].__file__.startswith(str(deps))
        assert_numpy_not_shadowed(deps)
        plugin.dock.raster_combo.setLayer(raster_layer)
        plugin.dock.model_widget.setFilePath(str(model_dir))
        plugin.controller.with_segmenter(lambda: None)
        wait_for(lambda: plugin.controller.model is not None)
    finally:
        plugin.unload()


def assert_numpy_not_shadowed(deps: Path) -> None:
    """A fresh QGIS Python with ``deps`` first on sys.path, as the plugin puts it, imports its
    own numpy and GDAL's numpy bridge."""
    check = (
        f"import sys; sys.path.insert(0, {str(deps)!r}); import numpy; "
        "from osgeo import gdal_array; print(numpy.__file__)"
    )
    run = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert not run.stdout.startswith(str(deps)), run.stdout


def test_impossible_version_fails_in_one_line(deps: Path) -> None:
    from geosam_qgis.dependencies import install_command, show_command
    from geosam_qgis.installer import InstallTask

    done, errors = [], []
    command = install_command("99.0", deps)
    task = InstallTask(command, deps, lambda: done.append(True), errors.append)
    QgsApplication.taskManager().addTask(task)
    wait_for(lambda: bool(done or errors), PIP_TIMEOUT)
    (line,) = errors
    assert not done and "\n" not in line
    assert line.startswith(f"installing onnxruntime failed: {show_command(command)} exited 1: ")
    assert "No matching distribution found for onnxruntime>=99.0" in line
    assert list(deps.iterdir()) == []


# Last: the module-scoped Processing provider stays registered to the end of the module, and
# the plugin test above registers its own.
def test_processing_refuses_a_too_old_onnxruntime(
    model_dir: Path, tmp_path: Path, provider: None, scene: Path
) -> None:
    import processing

    newer = model_variant(model_dir, tmp_path / "newer", {"min_onnxruntime": "99.0"})
    with pytest.raises(QgsProcessingException, match=r"needs onnxruntime 99\.0 or newer"):
        processing.run(
            "geosam:segment_parcels",
            {
                "INPUT": str(scene),
                "MODEL": str(newer),
                "PROMPTS": points_layer([(10.5, 10.5)], RASTER_CRS),
                "OUTPUT": "memory:",
            },
        )
