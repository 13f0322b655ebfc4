"""A result document -> the terminal table and the Markdown section (also merged by ``edgeformer-bench
report``); reading a result back with its schema checked."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from ..bench.schema import read_document
from .datasets import DataError

SCHEMA_NAME = "edgeformer-val"
SCHEMA_MAJOR = 1
TABLE_CLASSES = 20  # classification rows shown in the terminal
HEADLINE = {"classification": ("top1", "top5"), "detection": ("map", "ap50", "ap75"),
            "segmentation": ("miou", "pixel_accuracy", "mean_class_accuracy")}
TITLES = {"top1": "top-1", "top5": "top-5", "map": "mAP@[.5:.95]", "ap50": "AP50", "ap75": "AP75",
          "miou": "mIoU", "pixel_accuracy": "pixel accuracy", "mean_class_accuracy": "mean class accuracy",
          "top1_agreement": "top-1 agreement", "mean_logit_cosine": "mean logit cosine",
          "matched_box_rate": "matched-box rate", "pixel_agreement": "pixel agreement"}


def is_val_document(document) -> bool:
    return isinstance(document, dict) and str(document.get("schema", "")).startswith(SCHEMA_NAME + "/")


def read_val_result(path: Path) -> dict:
    return read_document(path, SCHEMA_NAME, SCHEMA_MAJOR, DataError)


def percent(value: Optional[float], digits: int = 2) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f}"


def signed(value: Optional[float]) -> str:
    return "—" if value is None else f"{100 * value:+.2f}"


def metric_rows(document: dict) -> List[tuple]:
    """(metric title, artifact %, reference %, delta points) for the task's headline metrics."""
    reference = document.get("reference") or {}
    rows = []
    for key in HEADLINE[document["task"]]:
        rows.append((TITLES[key], percent(document["metrics"].get(key)),
                     percent((reference.get("metrics") or {}).get(key)) if reference else "",
                     signed((reference.get("delta") or {}).get(key)) if reference else ""))
    return rows


def coverage(document: dict) -> str:
    data = document["data"]
    text = f"{data['evaluated']} of {data['listed']} images"
    if data.get("limit"):
        text += f" (--limit {data['limit']})"
    if data["skipped"]:
        text += f", {len(data['skipped'])} skipped (unreadable)"
    if data.get("interrupted"):
        text += ", INTERRUPTED (partial result)"
    return text


def agreement_text(document: dict) -> Optional[str]:
    reference = document.get("reference")
    if not reference:
        return None
    parts = []
    for key, value in reference["agreement"].items():
        if key in TITLES:
            parts.append(f"{TITLES[key]} {value:.4f}" if key == "mean_logit_cosine" and value is not None
                         else f"{TITLES[key]} {percent(value)} %")
    if reference.get("same_weights_as_export") is False:
        parts.append("WARNING: the reference weights are not the ones the artifact was exported from")
    return "; ".join(parts)


def markdown_section(document: dict) -> str:
    a, timing = document["artifact"], document["timing"]
    ips = timing.get("images_per_second")
    lines = [f"### Accuracy: {a['name']} ({a['format']} {a['precision']}, {a['backend']}) on {document['data']['path']}",
             "", f"{document['task']}, {coverage(document)}; {ips if ips is not None else '—'} images/s.", ""]
    reference = document.get("reference")
    if reference:
        lines += ["| metric | artifact % | PyTorch reference % | Δ points |", "|---|---:|---:|---:|"]
        lines += [f"| {t} | {x} | {r} | {d} |" for t, x, r, d in metric_rows(document)]
        lines += ["", f"Agreement with the reference: {agreement_text(document)}."]
    else:
        lines += ["| metric | artifact % |", "|---|---:|"]
        lines += [f"| {t} | {x} |" for t, x, _, _ in metric_rows(document)]
    return "\n".join(lines) + "\n"


def print_result(document: dict, console) -> None:
    from rich.table import Table
    from rich.text import Text

    a = document["artifact"]
    per = document["per_class"]
    title = "per class"
    if document["task"] == "classification" and len(per) > TABLE_CLASSES:  # ImageNet: 1000 rows
        per = sorted(per, key=lambda r: (r["top1"], r["top5"], r["class_id"]))[:TABLE_CLASSES]
        title = f"the {TABLE_CLASSES} weakest of {len(document['per_class'])} classes (all in --json)"
    if per:
        table = Table(title=title, title_justify="left")
        task = document["task"]
        columns = {"classification": ("class", "label", "images", "top-1 %", "top-5 %"),
                   "detection": ("category", "label", "AP %"),
                   "segmentation": ("class", "label", "IoU %", "GT pixels")}[task]
        for column in columns:
            table.add_column(column, justify="left" if column == "label" else "right")
        for row in per:
            if task == "classification":
                table.add_row(str(row["class_id"]), row["label"], str(row["images"]), percent(row["top1"]),
                              percent(row["top5"]))
            elif task == "detection":
                if row["ap"] is None:  # no ground truth of this category in the images evaluated
                    continue
                table.add_row(str(row["category_id"]), row["label"], percent(row["ap"]))
            elif row["gt_pixels"] or row["predicted_pixels"]:
                table.add_row(str(row["class_id"]), row["label"], percent(row["iou"]), str(row["gt_pixels"]))
        console.print(table)
    summary = Table()
    for column in ("metric", "artifact %") + (("reference %", "Δ points") if document.get("reference") else ()):
        summary.add_column(column, justify="left" if column == "metric" else "right")
    for title, x, r, d in metric_rows(document):
        summary.add_row(title, x, *((r, d) if document.get("reference") else ()))
    console.print(Text(f"{a['name']} ({a['format']} {a['precision']}, {a['backend']}): {coverage(document)}",
                       style="bold"), soft_wrap=True)
    console.print(summary)
    agreement = agreement_text(document)
    if agreement:
        console.print(Text(f"agreement with the PyTorch reference: {agreement}"), soft_wrap=True)
