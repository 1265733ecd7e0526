"""The before/after report of ``geosam improve``: the old and the new model on the parcels
held aside, as JSON (for the plugin's dialog) and Markdown (for a person)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from geosam.engine.eval_report import BASE, TUNED

REPORT_FORMAT = "geosam-improve/1"
REPORT_JSON = "improve_report.json"
REPORT_MD = "improve_report.md"
# The prompt kinds a user makes in the plugin: a box (a polygon drawn) and a click.
REPORTED_KINDS = ("box", "point")


def scores(column: dict[str, Any]) -> dict[str, dict[str, float | int]]:
    """mIoU and prompt count per reported kind of one evaluation column."""
    per_kind = column["per_kind"]
    return {
        kind: {"mIoU": per_kind[kind]["mIoU"], "prompts": per_kind[kind]["count"]}
        for kind in REPORTED_KINDS
        if kind in per_kind
    }


def improve_report(evaluation: dict[str, Any], **facts: Any) -> dict[str, Any]:
    """The report: ``facts`` (models, raster, parcels, settings, note) and the old ("before",
    the evaluation's base column: the model training started from) and new ("after", its
    tuned column) scores on the held-aside parcels."""
    models = evaluation["models"]
    return {
        "format": REPORT_FORMAT,
        **facts,
        "before": scores(models[BASE]),
        "after": scores(models[TUNED]),
    }


def report_markdown(report: dict[str, Any]) -> str:
    """The report as a short Markdown page: the table, then where everything is."""
    lines = [
        "# geosam improve: before and after",
        "",
        f"Old model: `{report['old_model']}`  ",
        f"New model: `{report['new_model']}`  ",
        f"Parcels: {report['parcels']['trained_on']} trained on, "
        f"{report['parcels']['held_aside']} held aside (seed {report['seed']}), "
        f"from `{report['parcels']['file']}` on `{report['raster']}`",
        "",
        "| prompt | prompts | old mIoU | new mIoU | change |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind, before in report["before"].items():
        after = report["after"][kind]["mIoU"]
        lines.append(
            f"| {kind} | {before['prompts']} | {before['mIoU']:.3f} | {after:.3f} "
            f"| {after - before['mIoU']:+.3f} |"
        )
    if report.get("note"):
        lines += ["", f"Note: {report['note']}"]
    lines += ["", f"Training run: `{report['run_dir']}`", ""]
    return "\n".join(lines)


def write_report(folder: Path, report: dict[str, Any]) -> None:
    """``improve_report.json`` and ``improve_report.md`` into ``folder``."""
    (folder / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n")
    (folder / REPORT_MD).write_text(report_markdown(report))
