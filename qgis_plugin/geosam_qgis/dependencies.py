"""Whether QGIS's Python can run the model, and if not, the exact command that fixes it.

QGIS ships its own Python, and onnxruntime is not in it. A user who meets an ImportError
traceback cannot tell which of their Pythons needs the package, so the plugin checks for it
before anything loads the runtime's model module, and names the interpreter QGIS runs on.
Nothing here imports onnxruntime at module level: this module must load when it is absent.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from .runtime.errors import GeosamError


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


def install_command() -> str:
    """The pip command that installs onnxruntime into this QGIS's Python."""
    return f'"{python_executable()}" -m pip install onnxruntime'


def missing_onnxruntime() -> str | None:
    """None when onnxruntime imports, else the message telling the user how to install it."""
    try:
        importlib.import_module("onnxruntime")
    except ImportError as error:
        hint = ""
        if sys.platform == "win32":
            hint = (
                " On Windows, run it in the OSGeo4W Shell (Start menu → OSGeo4W Shell) as "
                "administrator: python -m pip install onnxruntime."
            )
        return (
            f"geosam needs the onnxruntime package in QGIS's Python ({error}). Install it with: "
            f"{install_command()} and restart QGIS.{hint}"
        )
    return None


def require_onnxruntime() -> None:
    """Raise :class:`GeosamError` with the install command when onnxruntime is missing."""
    message = missing_onnxruntime()
    if message is not None:
        raise GeosamError(message)
