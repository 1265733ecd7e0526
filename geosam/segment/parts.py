"""The finished blocks of a region run, kept beside its output so that a rerun resumes.

A region takes hours; a crash, Ctrl-C or ``kill -9`` must cost only the blocks in flight.
Each finished block's parcels are one Parquet file in ``.<output name>.parts/``
(WKB in grid pixels plus attributes: the output CRS is applied only at the end), written
atomically (:func:`geosam.utils.publish.publish_file`), so a file there is always whole. The
folder's ``settings.json`` records what the parcels depend on (rasters, model hashes,
automatic-mode settings, block size); a rerun with other settings would mix parcels of two
runs, so it is refused unless ``--overwrite`` clears the folder. Settings applied only when
the output is written (``--crs``, ``--simplify``, the format) are not recorded: changing them
reuses the blocks. The folder is removed once the output is published.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from geosam.segment.blocks import BlockParcels
from geosam.utils.errors import GeosamError
from geosam.utils.publish import publish_file

SETTINGS = "settings.json"
SUFFIX = ".parquet"
# What a part file holds (2: border parcels carry their bit-packed mask). Recorded with the
# settings, so parts an older geosam left behind are refused, not misread.
PARTS_FORMAT = 2


class Parts:
    """The parts folder of ``output``, checked against ``settings`` (see module doc)."""

    def __init__(self, output: Path, settings: Mapping[str, Any], overwrite: bool) -> None:
        self.folder = output.parent / f".{output.name}.parts"
        self.settings = json.loads(json.dumps(settings))
        recorded = self.folder / SETTINGS
        if recorded.is_file() and json.loads(recorded.read_text()) != self.settings:
            if not overwrite:
                raise GeosamError(
                    f"{self.folder} holds blocks of {output} made with other settings or another "
                    "model: pass --overwrite to start again, or give another output"
                )
            shutil.rmtree(self.folder)

    def finished(self) -> set[str]:
        """The keys of the blocks already finished."""
        return {path.stem for path in self.folder.glob(f"*{SUFFIX}")}

    def save(self, parcels: BlockParcels) -> None:
        """Keep one finished block (atomically: a kill leaves it whole or absent). The folder
        is made with the first block, so a run that fails before any leaves nothing."""
        settings = self.folder / SETTINGS
        if not settings.is_file():
            with publish_file(settings) as staging:
                staging.write_text(json.dumps(self.settings, indent=1))
        stats = {
            "windows": parcels.windows,
            "prompts": parcels.prompts,
            "dropped": dict(parcels.dropped),
            "worker": parcels.worker,
            "peak_rss": parcels.peak_rss,
        }
        table = pa.Table.from_pylist(parcels.rows, schema=_SCHEMA)
        table = table.replace_schema_metadata({"geosam": json.dumps(stats)})
        with publish_file(self.folder / f"{parcels.key}{SUFFIX}") as staging:
            pq.write_table(table, staging)

    def load(self, key: str) -> BlockParcels:
        table = pq.read_table(self.folder / f"{key}{SUFFIX}")
        stats = json.loads(table.schema.metadata[b"geosam"])
        return BlockParcels(
            key,
            table.to_pylist(),
            stats["windows"],
            stats["prompts"],
            Counter(stats["dropped"]),
            stats["worker"],
            stats["peak_rss"],
        )

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


_SCHEMA = pa.schema(
    [
        ("wkb", pa.binary()),
        ("score", pa.float64()),
        ("stability", pa.float64()),
        ("border", pa.bool_()),
        ("cut", pa.bool_()),
        ("fine", pa.bool_()),
        ("bits", pa.binary()),
        ("box", pa.list_(pa.int64())),
        ("seen", pa.list_(pa.list_(pa.int64()))),
    ]
)
