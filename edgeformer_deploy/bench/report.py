"""``edgeformer-bench report``: results of several boards / runs -> one Markdown table + one PNG.

Host side (matplotlib, Agg backend). For every run the reference is its first MobileViT artifact (else
the run's baseline): ratios are taken round by round from the interleaved samples (``samples_ms[i]`` of
every artifact comes from round ``i``), so they answer "is EdgeFormer faster than MobileViT on this board,
by how much, and how stable is that" without the drift between runs.
"""
from __future__ import annotations

import inspect
import io
import json
from pathlib import Path
from typing import List, Optional, Sequence

import matplotlib  # ImportError here -> the CLI's install hint, before any work

from ..errors import EdgeformerError
from .display import count, ms
from .runner import model_family, ratio_summary, round_ratios
from .schema import ResultError, instructions_per_inference, read_result, write_atomic

MIB = 1024 * 1024
TARGET_RATIO = 0.65  # issue goal: EdgeFormer-S / MobileViT-S latency at most this


class Row:
    """One measured artifact of one run, with its ratio to the run's reference."""

    def __init__(self, run: int, source: Path, document: dict, artifact: dict, reference: Optional[dict]):
        self.run, self.source, self.document, self.artifact = run, source, document, artifact
        system = document.get("system", {})
        settings = document.get("settings", {})
        self.machine = str(system.get("label") or system.get("board") or system.get("cpu_model") or source.stem)
        self.threads = settings.get("threads")
        self.reference = reference
        self.is_reference = reference is artifact
        ok = artifact.get("status") == "ok"
        self.samples = [float(v) for v in artifact.get("samples_ms") or []] if ok else []
        ref_samples = [float(v) for v in (reference or {}).get("samples_ms") or []]
        self.ratios = round_ratios(self.samples, ref_samples) if reference is not None and ok else []
        self.ratio = ratio_summary(self.ratios)
        self.instructions = instructions_per_inference(artifact)
        ref_instr = instructions_per_inference(reference) if reference is not None else None
        self.instr_ratio = self.instructions / ref_instr if self.instructions is not None and ref_instr else None

    @property
    def model(self) -> str:
        return str(self.artifact.get("model") or self.artifact.get("name"))

    @property
    def label(self) -> str:
        return f"{self.model} {self.artifact.get('precision') or ''}".strip()


def _reference(document: dict) -> Optional[dict]:
    ok = [a for a in document["artifacts"] if a.get("status") == "ok" and a.get("samples_ms")]
    mobilevit = [a for a in ok if model_family(a) == "mobilevit"]
    if mobilevit:
        return mobilevit[0]
    baseline = document.get("baseline")
    return next((a for a in ok if a.get("index") == baseline), ok[0] if ok else None)


def split_results(paths: Sequence[Path]) -> tuple:
    """(benchmark result files, ``edgeformer-val`` accuracy documents) among ``paths``."""
    from ..val.report import is_val_document, read_val_result

    bench, accuracy = [], []
    for path in paths:
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            document = None  # read_result says what is wrong with it
        if is_val_document(document):
            try:
                accuracy.append(read_val_result(path))
            except EdgeformerError as exc:
                raise ResultError(str(exc)) from None
        else:
            bench.append(path)
    return bench, accuracy


def load_rows(paths: Sequence[Path]) -> List[Row]:
    if not paths:
        raise ResultError("no result files given")
    rows: List[Row] = []
    for run, path in enumerate(paths):
        document = read_result(path)
        reference = _reference(document)
        rows.extend(Row(run, Path(path), document, artifact, reference) for artifact in document["artifacts"])
    return rows


def _cell(value) -> str:
    return str(value).replace("|", "\\|")


def markdown(rows: List[Row], png_name: Optional[str]) -> str:
    """The report: a verdict line per run, then one table row per artifact and run."""
    lines = ["# edgeformer-bench report", ""]
    verdicts = []
    for row in rows:
        if row.document.get("emulation") and row.instr_ratio is not None and not row.is_reference:
            # emulated: wall-clock is qemu's, so the verdict is the instruction-count ratio
            ref_model = row.reference.get("model") or row.reference.get("name")
            fewer = (1 - row.instr_ratio) * 100
            verdicts.append(f"- **{row.machine}** ({row.artifact.get('backend')}, {row.artifact.get('format')} "
                            f"{row.artifact.get('precision')}): {row.label} / {ref_model} = "
                            f"**{row.instr_ratio:.3f}** in guest instructions per inference — EdgeFormer "
                            f"{f'{fewer:.0f}% fewer' if fewer >= 0 else f'{-fewer:.0f}% more'}"
                            f"{'' if row.instr_ratio <= TARGET_RATIO else f' (goal ≤ {TARGET_RATIO})'}")
        elif (model_family(row.artifact) == "edgeformer" and row.ratio and row.reference is not None
              and not row.is_reference):
            ref_model = row.reference.get("model") or row.reference.get("name")
            faster = (1 - row.ratio["median"]) * 100
            word = f"{faster:.0f}% faster" if faster >= 0 else f"{-faster:.0f}% slower"
            spread = row.ratio["p90"] - row.ratio["p10"]
            verdicts.append(f"- **{row.machine}** ({row.artifact.get('backend')}, {row.artifact.get('format')} "
                            f"{row.artifact.get('precision')}): {row.label} / {ref_model} = "
                            f"**{row.ratio['median']:.3f}** [p10–p90 {row.ratio['p10']:.3f}–{row.ratio['p90']:.3f}, "
                            f"{row.ratio['rounds']} rounds] — EdgeFormer {word}"
                            f"{'' if row.ratio['median'] <= TARGET_RATIO else f' (goal ≤ {TARGET_RATIO})'}; "
                            f"{'stable' if spread <= 0.1 * row.ratio['median'] else 'noisy'} (spread {spread:.3f})")
    if verdicts:
        lines += verdicts + [""]
    with_instr = any(r.instructions is not None for r in rows)
    header = ["machine", "backend", "model", "precision", "imgsz", "threads", "p50 ms", "p90 ms", "img/s",
              "peak RSS MiB", "size MB", "ratio vs MobileViT, median [p10–p90]"]
    if with_instr:
        header += ["instructions/inference", "instr. ratio"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        a = row.artifact
        backend = f"{a.get('backend') or '–'} {a.get('backend_version') or ''}".strip()
        if a.get("status") != "ok":
            cells = [row.machine, backend, row.label, a.get("precision") or "–", a.get("imgsz") or "–",
                     row.threads or "default", f"failed: {a.get('error')}"] + ["–"] * (len(header) - 7)
        else:
            lat = a.get("latency_ms") or {}
            ratio = ("reference" if row.is_reference else
                     f"{row.ratio['median']:.3f} [{row.ratio['p10']:.3f}–{row.ratio['p90']:.3f}]" if row.ratio else "–")
            cells = [row.machine, backend, row.model, a.get("precision") or "–", a.get("imgsz") or "–",
                     row.threads or "default", ms(lat.get("p50")), ms(lat.get("p90")),
                     f"{a['throughput_ips']:.1f}" if a.get("throughput_ips") else "–",
                     f"{a['peak_rss_bytes'] / MIB:.0f}" if a.get("peak_rss_bytes") else "–",
                     f"{a['size_bytes'] / 1e6:.1f}" if a.get("size_bytes") else "–", ratio]
            if with_instr:
                cells += [count(row.instructions),
                          "reference" if row.is_reference and row.instructions is not None else
                          f"{row.instr_ratio:.3f}" if row.instr_ratio is not None else "–"]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines.append("")
    notes = sorted({f"{Path(r.source).name}: interrupted, partial results" for r in rows
                    if r.document.get("interrupted")})
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    lines.append("Latency: timed runs measured interleaved on each machine; ratios are per-round ratios against the "
                 "run's MobileViT artifact (else its baseline); peak RSS from a fresh process per artifact.")
    lines += profile_sections(rows)
    if png_name:
        lines += ["", f"![latency and ratio per machine]({png_name})"]
    return "\n".join(lines) + "\n"


PROFILE_FAMILIES = 8


def profile_sections(rows: List[Row]) -> List[str]:
    """``--profile`` runs: per machine, each artifact's instructions by kernel family, side by side."""
    profiled = [r for r in rows if r.artifact.get("profile")]
    lines: List[str] = []
    for machine in dict.fromkeys(r.machine for r in profiled):
        mine = [r for r in profiled if r.machine == machine]
        families = list(dict.fromkeys(f["family"] for r in mine
                                      for f in r.artifact["profile"]["families"][:PROFILE_FAMILIES]))
        lines += ["", f"### Where the instructions go: {machine}", "",
                  "| kernel family | " + " | ".join(_cell(r.label) for r in mine) + " |",
                  "|---|" + "---|" * len(mine)]
        for family in families + ["total"]:
            cells = []
            for r in mine:
                profile = r.artifact["profile"]
                found = next((f for f in profile["families"] if f["family"] == family), None)
                cells.append(count(profile["instructions_per_inference"]) if family == "total" else
                             f"{count(found['instructions'])} ({100 * found['share']:.1f}%)" if found else "–")
            lines.append(f"| {_cell(family)} | " + " | ".join(cells) + " |")
    return lines


def plot(rows: List[Row]) -> bytes:
    """One line of plots per machine/run: latency distribution per artifact (box plot), and the per-round
    ratio to MobileViT (box plot, 1 = as fast, the issue's 0.65 goal dashed)."""
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    groups: List[List[Row]] = []
    for run in sorted({r.run for r in rows}):
        measured = [r for r in rows if r.run == run and r.samples]
        if measured:
            groups.append(measured)
    height = max(1, len(groups))
    fig, axes = plt.subplots(height, 2, figsize=(13, 1.2 + 2.2 * height), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 2]})
    if not groups:
        for ax in axes[0]:
            ax.text(0.5, 0.5, "no measured artifacts", ha="center", va="center")
            ax.set_axis_off()
    for line, group in zip(axes, groups):
        lat_ax, ratio_ax = line
        first = group[0]
        title = f"{first.machine} — {first.artifact.get('backend')}, threads {first.threads or 'default'}"
        labels = [r.label for r in group]
        _horizontal_boxes(lat_ax, [r.samples for r in group])
        lat_ax.set_yticks(range(1, len(group) + 1),
                          [f"{label}\np50 {ms(r.artifact['latency_ms']['p50'])} ms" for label, r in zip(labels, group)])
        lat_ax.invert_yaxis()  # first artifact (the baseline) on top
        lat_ax.set_xlabel("latency per inference (ms)")
        lat_ax.set_title(title, fontsize=10, loc="left")
        lat_ax.grid(axis="x", alpha=0.3)
        compared = [r for r in group if r.ratios and not r.is_reference]
        if compared:
            _horizontal_boxes(ratio_ax, [r.ratios for r in compared])
            ratio_ax.set_yticks(range(1, len(compared) + 1),
                                [f"{r.label}\n{r.ratio['median']:.3f}" for r in compared])
            ratio_ax.invert_yaxis()
            for y, r in enumerate(compared, 1):
                if r.instr_ratio is not None:
                    ratio_ax.plot([r.instr_ratio], [y], marker="D", color="tab:red", linestyle="none",
                                  label="instruction ratio" if y == 1 else None)
            ratio_ax.axvline(1.0, color="grey", linewidth=1)
            ratio_ax.axvline(TARGET_RATIO, color="green", linestyle="--", linewidth=1, label=f"goal {TARGET_RATIO}")
            ref = first.reference
            ratio_ax.set_xlabel(f"latency ratio vs {ref.get('model') or ref.get('name')} (per round)")
            ratio_ax.legend(loc="lower right", fontsize=8)
            ratio_ax.grid(axis="x", alpha=0.3)
        else:
            ratio_ax.text(0.5, 0.5, "no ratio (one artifact)", ha="center", va="center")
            ratio_ax.set_axis_off()
    fig.suptitle("edgeformer-bench: latency per artifact (box p25–p75, whiskers p5–p95) and per-round ratio",
                 fontsize=11)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _horizontal_boxes(ax, data) -> None:
    """Box plots along x (whiskers p5–p95); ``orientation`` replaced ``vert`` in matplotlib 3.10."""
    if "orientation" in inspect.signature(ax.boxplot).parameters:
        ax.boxplot(data, orientation="horizontal", whis=(5, 95))
    else:
        ax.boxplot(data, vert=False, whis=(5, 95))


def accuracy_sections(documents: Sequence[dict]) -> str:
    """The ``edgeformer-val`` results as Markdown sections under the latency report."""
    from ..val.report import markdown_section

    if not documents:
        return ""
    return "\n## Accuracy (edgeformer-val)\n\n" + "\n".join(markdown_section(d) for d in documents)


def write_report(paths: Sequence[Path], out_dir: Path) -> tuple:
    """Read, merge, write ``out_dir/report.md`` and ``out_dir/report.png`` (each atomically)."""
    paths, accuracy = split_results(paths)
    if not paths and accuracy:
        raise ResultError("only edgeformer-val results given; the report merges them into benchmark results")
    rows = load_rows(paths)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ResultError(f"--out {out_dir} is an existing file, not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        png = write_atomic(out_dir / "report.png", plot(rows))
        md = write_atomic(out_dir / "report.md", markdown(rows, png.name) + accuracy_sections(accuracy))
    except OSError as exc:
        raise ResultError(f"cannot write the report into {out_dir}: {exc.strerror or exc}") from None
    return md, png
