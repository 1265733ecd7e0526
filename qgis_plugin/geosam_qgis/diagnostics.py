"""The Diagnostics dialog: everything a bug report about the plugin needs, and a Copy button.

Most reports about QGIS AI plugins are about the environment (which Python, which
onnxruntime, which execution providers, which model), and users cannot tell where to look, so
the plugin writes it down itself: versions of QGIS, Python, numpy, GDAL and onnxruntime, the
providers onnxruntime offers, the model's manifest, the embedding cache's use and the geosam
CLI the plugin would run (with what it says to ``--version``). The text is built without
importing the runtime's model module, so it also reports a QGIS where onnxruntime is missing.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from osgeo import gdal
from qgis.core import Qgis
from qgis.PyQt.QtGui import QFontDatabase
from qgis.PyQt.QtWidgets import (
    QApplication,
    QDialog,
    QDialogButtonBox,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .cli_locator import ENVIRONMENT, SETTING, find_geosam_cli
from .dependencies import MANIFEST, PACKAGE, deps_dir, python_executable

# How long ``geosam --version`` may take before the dialog gives up on it (it imports only
# the CLI's option parser, so a slower answer means something is wrong with that Python).
CLI_TIMEOUT_S = 15
# Manifest fields in the summary, in this order (the rest is in manifest.json itself).
MANIFEST_SUMMARY = (
    "model_type",
    "geosam_version",
    "input_size",
    "ground_resolution_m",
    "band_order",
    "bands",
    "opset",
    "onnx_ir_version",
    "min_onnxruntime",
    "auto_thresholds",
    "weights_sha256",
)


def onnxruntime_lines() -> list[str]:
    """onnxruntime's version and file, and its execution providers (CPU, CUDA, ...)."""
    try:
        module = importlib.import_module(PACKAGE)
    except ImportError as error:
        return [f"onnxruntime: missing ({error})", "execution providers: none (no onnxruntime)"]
    return [
        f"onnxruntime: {module.__version__} ({Path(module.__file__).parent})",
        f"execution providers: {', '.join(module.get_available_providers())}",
    ]


def manifest_lines(model_folder: str) -> list[str]:
    """The chosen model folder and the summary fields of its manifest."""
    if not model_folder:
        return ["model: none chosen"]
    path = Path(model_folder) / MANIFEST
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        return [f"model: {model_folder} ({path.name} unreadable: {error})"]
    fields = ", ".join(
        f"{key} {json.dumps(manifest.get(key))}" for key in MANIFEST_SUMMARY if key in manifest
    )
    return [f"model: {model_folder}", f"manifest: {fields}"]


def cache_line(entries: int, nbytes: int, max_bytes: int) -> str:
    return (
        f"embedding cache: {entries} windows, {nbytes / 2**20:.1f} of {max_bytes / 2**20:.0f} MiB"
    )


def cli_lines() -> list[str]:
    """Which geosam CLI the plugin would run and its ``--version``."""
    cli = find_geosam_cli()
    if cli is None:
        return [
            f"geosam CLI: not found (plugin setting {SETTING}, environment variable "
            f"{ENVIRONMENT}, or geosam on PATH)"
        ]
    try:
        answer = subprocess.run(
            [cli, "--version"],
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
        )
        version = (answer.stdout or answer.stderr).strip().splitlines()[-1:] or ["no answer"]
        said = version[0] if answer.returncode == 0 else f"exit {answer.returncode}: {version[0]}"
    except (OSError, subprocess.TimeoutExpired) as error:
        said = f"cannot run it: {error}"
    return [f"geosam CLI: {cli} ({said})"]


def diagnostics_text(model_folder: str, cache: tuple[int, int, int] | None) -> str:
    """The report: one ``name: value`` line per item. ``cache`` is (windows, bytes, limit)
    of the embedding cache, None before the panel has one."""
    lines = [
        f"QGIS: {Qgis.QGIS_VERSION}",
        f"Python: {sys.version.split()[0]} ({python_executable()})",
        f"numpy: {np.__version__}",
        f"GDAL: {gdal.__version__}",
        *onnxruntime_lines(),
        f"plugin deps folder: {deps_dir()}",
        *manifest_lines(model_folder),
        cache_line(*cache) if cache is not None else "embedding cache: not created yet",
        *cli_lines(),
    ]
    return "\n".join(lines)


class DiagnosticsDialog(QDialog):
    """The report in a read-only text box, with Copy (to the clipboard) and Close."""

    def __init__(self, text: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("geosam diagnostics")
        layout = QVBoxLayout(self)
        self.text_box = QPlainTextEdit(text)
        self.text_box.setReadOnly(True)
        self.text_box.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        layout.addWidget(self.text_box)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy the report to the clipboard, for a bug report")
        buttons.addButton(self.copy_button, QDialogButtonBox.ButtonRole.ActionRole)
        self.copy_button.clicked.connect(self.copy)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.resize(820, 440)

    def copy(self) -> None:
        QApplication.clipboard().setText(self.text_box.toPlainText())
