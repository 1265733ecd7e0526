"""Whether QGIS's Python can run the model, and if not, the exact command that fixes it.

QGIS ships its own Python, and onnxruntime is not in it. A user who meets an ImportError
traceback cannot tell which of their Pythons needs the package, so the plugin checks for it
before anything loads the runtime's model module, and names the interpreter QGIS runs on.
Nothing here imports onnxruntime at module level: this module must load when it is absent.

An onnxruntime older than the model's ONNX files (their IR version and opset) refuses them
with an error about the IR version, so a model's manifest names the oldest onnxruntime that
reads it (``min_onnxruntime``, written by ``geosam export-onnx``) and it is checked too.
The fix installs with QGIS's own pip into a folder of the QGIS profile (:func:`deps_dir`):
no administrator rights, no other Python touched, and the plugin folder, which an upgrade
replaces, is left alone; the folder goes on ``sys.path`` when the plugin loads.
"""

from __future__ import annotations

import importlib
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from qgis.core import QgsApplication

from .runtime.errors import GeosamError

PACKAGE = "onnxruntime"
# runtime.model's MANIFEST; that module imports onnxruntime, which may be what is missing.
MANIFEST = "manifest.json"
# The manifest key export-onnx writes (geosam.export.metadata.runtime_fields).
MINIMUM_KEY = "min_onnxruntime"


def python_executable() -> str:
    """The Python interpreter of this QGIS.

    Inside QGIS ``sys.executable`` is usually the QGIS program itself (qgis, qgis-bin.exe),
    so the interpreter is looked for beside the Python prefix QGIS runs on.
    """
    current = Path(sys.executable)
    if current.name.lower().startswith("python"):
        return str(current)
    prefix = Path(sys.exec_prefix)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = (
        [prefix / "python.exe", prefix / "python3.exe"]
        if sys.platform == "win32"
        else [prefix / "bin" / f"python{version}", prefix / "bin" / "python3"]
    )
    return str(next((path for path in candidates if path.is_file()), f"python{version}"))


def deps_dir() -> Path:
    """Where the plugin installs onnxruntime: ``geosam/deps`` in the QGIS profile folder."""
    return Path(QgsApplication.qgisSettingsDirPath()) / "geosam" / "deps"


def use_deps(folder: Path) -> None:
    """Put ``folder`` first on ``sys.path`` (once), so what pip installed there imports now,
    ahead of an older copy elsewhere, without restarting QGIS."""
    entry = str(folder)
    if entry not in sys.path:
        sys.path.insert(0, entry)
    importlib.invalidate_caches()


def requirement(minimum: str | None) -> str:
    """The pip requirement: onnxruntime, at least ``minimum`` when a model names one."""
    return PACKAGE if minimum is None else f"{PACKAGE}>={minimum}"


def install_command(minimum: str | None, target: Path) -> list[str]:
    """pip, run by QGIS's Python, installing onnxruntime (``>= minimum``) into ``target``;
    ``--upgrade`` replaces an older copy pip put there before.

    ``--no-deps``: with ``--target`` pip ignores what QGIS's Python already has and would put
    onnxruntime's whole dependency tree in ``target``, numpy 2 included; ``target`` goes first
    on ``sys.path`` (:func:`use_deps`), so that numpy would shadow the numpy 1.x QGIS's GDAL is
    built on. Of its dependencies onnxruntime imports only numpy to run a model (the others
    serve its tools), and QGIS always has numpy, so onnxruntime alone is installed.
    """
    return [
        python_executable(),
        "-m",
        "pip",
        "install",
        "--upgrade",
        "--no-deps",
        "--target",
        str(target),
        requirement(minimum),
    ]


def show_command(command: list[str]) -> str:
    """``command`` as the user would type it in this system's shell."""
    return subprocess.list2cmdline(command) if sys.platform == "win32" else shlex.join(command)


def version_key(version: str) -> tuple[int, ...]:
    """The release numbers of a version string, to compare: "1.10.0" > "1.9", "1.17.3" >= "1.17"."""
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


def model_minimum(model_folder: str) -> str | None:
    """The oldest onnxruntime the model in ``model_folder`` needs, from its manifest; None for
    an older export, another tool's model or an unreadable manifest (loading reports that)."""
    try:
        manifest = json.loads((Path(model_folder) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    minimum = manifest.get(MINIMUM_KEY) if isinstance(manifest, dict) else None
    return str(minimum) if minimum else None


@dataclass(frozen=True)
class RuntimeProblem:
    """Why the model cannot run yet: ``message`` (one line, with the command), the version the
    install must reach, and ``restart``: an older onnxruntime is already loaded in QGIS, so
    the one installed takes effect after a restart."""

    message: str
    minimum: str | None
    restart: bool


def onnxruntime_problem(model_folder: str = "") -> RuntimeProblem | None:
    """None when onnxruntime imports and is recent enough for the model in ``model_folder``
    (when given), else what is wrong and how to fix it."""
    minimum = model_minimum(model_folder) if model_folder else None
    command = show_command(install_command(minimum, deps_dir()))
    try:
        module = importlib.import_module(PACKAGE)
    except ImportError as error:
        hint = ""
        if sys.platform == "win32":
            hint = " (on Windows, run it in the OSGeo4W Shell, from the Start menu)"
        return RuntimeProblem(
            f"geosam needs the onnxruntime package in QGIS's Python ({error}): press Install "
            f"in the message bar, or run {command}{hint}",
            minimum,
            restart=False,
        )
    version = getattr(module, "__version__", "0")
    if minimum is not None and version_key(version) < version_key(minimum):
        return RuntimeProblem(
            f"model {model_folder} needs onnxruntime {minimum} or newer to read its ONNX "
            f"files; QGIS's Python has {version}: press Install in the message bar, or run "
            f"{command}, then restart QGIS",
            minimum,
            restart=True,
        )
    return None


def require_onnxruntime(model_folder: str = "") -> None:
    """Raise :class:`GeosamError` with the install command when onnxruntime is missing or
    older than the model in ``model_folder`` needs."""
    problem = onnxruntime_problem(model_folder)
    if problem is not None:
        raise GeosamError(problem.message)
