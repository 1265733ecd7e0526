"""Why a prompt or a mask gave no parcel: the reasons both front ends count and report.

The CLI logs them and the QGIS plugin shows them in Processing's log, from the same counts
made by the same loops, so a run reports the same reasons whichever front end ran it.
Automatic mode's own filters (predicted IoU, stability, area, window edge, duplicate) are
counted by :mod:`.auto` under their names; an open piece is a window's piece of a parcel that
no neighbouring window continued (:func:`.masks.open_piece`).
"""

from __future__ import annotations

from collections import Counter

OUTSIDE = "outside the raster"
BELOW_SCORE = "below the minimum score"
EMPTY = "empty mask"
OPEN_PIECE = "open piece"
# a fine pass's parcel mostly on parcels the first pass found (AutoSegmenter.fine_parcels)
FINE_COVERED = "fine-pass parcel on a found parcel"


def describe_counts(counts: Counter[str]) -> str:
    """``"3 below the minimum score, 1 empty mask"``: what was skipped, for messages."""
    return ", ".join(f"{count} {reason}" for reason, count in counts.items() if count)
