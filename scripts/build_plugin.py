"""Build the installable QGIS plugin: qgis_plugin/geosam_qgis + geosam/runtime → one zip.

The plugin runs on the runtime the CLI runs on, vendored as ``geosam_qgis/runtime`` and
imported relatively: QGIS's Python may hold an unrelated package called ``geosam`` (another
plugin installs one), so the plugin must never import that name. The runtime is copied here,
not kept twice in git, and the build refuses plugin code that imports ``geosam`` absolutely.

    python scripts/build_plugin.py    # → build/qgis_plugin/geosam_qgis/, dist/geosam_qgis.zip

The unzipped folder under build/ is what the plugin tests import. Standard library only, so
any Python builds it (QGIS's included).
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "geosam_qgis"
SOURCE = ROOT / "qgis_plugin" / PLUGIN
RUNTIME = ROOT / "geosam" / "runtime"
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")


def geosam_version() -> str:
    text = (ROOT / "geosam" / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE)
    if match is None:
        raise SystemExit("geosam/__init__.py has no __version__")
    return match.group(1)


def absolute_geosam_imports(folder: Path) -> list[str]:
    """``file:line`` of every ``import geosam…`` / ``from geosam… import`` under ``folder``."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            if any(name == "geosam" or name.startswith("geosam.") for name in names):
                found.append(f"{path.relative_to(folder.parent)}:{node.lineno}")
    return found


def stage(out: Path) -> Path:
    """The plugin folder ready to zip, at ``out/geosam_qgis`` (replaced if present)."""
    target = out / PLUGIN
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(SOURCE, target, ignore=IGNORE)
    if (target / "runtime").exists():
        raise SystemExit(f"{SOURCE}/runtime exists: the runtime is vendored from {RUNTIME} only")
    shutil.copytree(RUNTIME, target / "runtime", ignore=IGNORE)
    metadata = target / "metadata.txt"
    metadata.write_text(metadata.read_text() + f"version={geosam_version()}\n")
    imports = absolute_geosam_imports(target)
    if imports:
        raise SystemExit(
            "the plugin must import its bundled runtime relatively, not 'geosam': "
            + ", ".join(imports)
        )
    return target


def write_zip(folder: Path, archive: Path) -> None:
    """Zip ``folder`` so that it unpacks as one top-level folder, as QGIS installs plugins."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_suffix(".zip.partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                bundle.write(path, path.relative_to(folder.parent).as_posix())
    partial.replace(archive)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", type=Path, default=ROOT / "build" / "qgis_plugin")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "dist" / f"{PLUGIN}.zip")
    args = parser.parse_args(argv)
    folder = stage(args.build_dir)
    write_zip(folder, args.output)
    print(f"plugin: {folder}, zip: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
