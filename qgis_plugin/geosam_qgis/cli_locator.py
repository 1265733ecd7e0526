"""Where the geosam command line is: QGIS's Python has no torch, so training, tiling and the
CLI's version come from a geosam installed in another Python, run as a separate process.

One place decides which executable that is, in the order a user expects an explicit choice
to win: the plugin setting ``geosam/cli_path`` (set once in the plugin), the ``GEOSAM_CLI``
environment variable, then ``geosam`` on PATH. Paths that do not name an executable file are
skipped, so a stale setting falls back to the next place rather than failing later.
"""

from __future__ import annotations

import os
import shutil

from qgis.core import QgsSettings

SETTING = "geosam/cli_path"
ENVIRONMENT = "GEOSAM_CLI"


def find_geosam_cli() -> str | None:
    """The geosam executable to run, or None when none of the three places names one."""
    for candidate in (
        QgsSettings().value(SETTING, "", type=str),
        os.environ.get(ENVIRONMENT),
        "geosam",
    ):
        found = shutil.which(candidate) if candidate else None
        if found is not None:
            return found
    return None


def missing_cli_message() -> str:
    """What to do when :func:`find_geosam_cli` finds none."""
    return (
        f"the geosam command line was not found: install geosam (pip install geosam) and set "
        f"its path in the plugin setting {SETTING}, or in {ENVIRONMENT}, or put it on PATH"
    )
