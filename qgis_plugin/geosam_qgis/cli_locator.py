"""Where the geosam command line is: QGIS's Python has no torch, so training, evaluation and
export run in the geosam CLI of another Python, started as a subprocess.

Looked for in this order: the plugin setting ``geosam/cli_path`` (set once by the user), the
environment variable ``GEOSAM_CLI``, then ``geosam`` on PATH. The first that names an
executable file wins.
"""

from __future__ import annotations

import os
import shutil

from qgis.core import QgsSettings

SETTING = "geosam/cli_path"
ENVIRONMENT = "GEOSAM_CLI"


def _executable(path: str) -> bool:
    return bool(path) and os.path.isfile(path) and os.access(path, os.X_OK)


def find_geosam_cli() -> str | None:
    """The path of the geosam CLI to run, or None when none is set or on PATH."""
    configured = QgsSettings().value(SETTING, "", type=str) or ""
    for candidate in (configured.strip(), os.environ.get(ENVIRONMENT, "").strip()):
        if _executable(candidate):
            return candidate
    return shutil.which("geosam")


def missing_cli_message() -> str:
    """What to do when :func:`find_geosam_cli` finds none."""
    return (
        f"the geosam command line was not found: install geosam (pip install geosam) and set "
        f"its path in the plugin setting {SETTING}, or in {ENVIRONMENT}, or put it on PATH"
    )
