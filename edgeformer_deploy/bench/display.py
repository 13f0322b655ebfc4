"""Terminal side of ``edgeformer-bench``: the progress bar (stderr) and the result table (rich)."""
from __future__ import annotations

import sys
import time
from typing import Optional

from .runner import Progress
from .schema import instructions_per_inference

MIB = 1024 * 1024


class RichProgress(Progress):
    """A rich progress bar on stderr, shown only on a terminal. Refreshed from the runner's own thread,
    between inferences (no refresh thread competes with the measured runs), and rarely enough that the
    refreshes take at most 1/BUDGET of the wall time: a redraw costs 1-5 ms on a busy machine, more on a
    small board, and the bench overhead must stay far below 1%."""

    BUDGET = 400
    MIN_INTERVAL = 0.25  # s

    def __init__(self, enabled: Optional[bool] = None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn

        enabled = sys.stderr.isatty() if enabled is None else enabled
        self.bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       console=Console(stderr=True), transient=True, auto_refresh=False, disable=not enabled)
        self.task = None
        self.last = 0.0
        self.interval = self.MIN_INTERVAL

    def __enter__(self) -> "RichProgress":
        self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.stop()

    def stage(self, description: str, total: int) -> None:
        if self.task is None:
            self.task = self.bar.add_task(description, total=total)
        else:
            self.bar.reset(self.task, description=description, total=total)
        self.bar.refresh()
        self.last = time.perf_counter()

    def advance(self, steps: int = 1) -> None:
        self.bar.advance(self.task, steps)
        now = time.perf_counter()
        if now - self.last > self.interval:
            self.bar.refresh()
            self.last = time.perf_counter()
            self.interval = max(self.MIN_INTERVAL, (self.last - now) * self.BUDGET)


def ms(value: Optional[float]) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if value < 10 else f"{value:.2f}" if value < 100 else f"{value:.1f}"


def count(value: Optional[float]) -> str:
    """1.23e9 -> 1.230 G."""
    if value is None:
        return "–"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.4g} {unit}"
    return f"{value:.0f}"


def ratio_text(summary: Optional[dict], baseline: bool = False) -> str:
    if baseline:
        return "1 (baseline)"
    if not summary:
        return "–"
    return f"{summary['median']:.3f} [{summary['p10']:.3f}–{summary['p90']:.3f}]"


def system_line(document: dict) -> str:
    system, settings = document.get("system", {}), document.get("settings", {})
    label, cpu = str(system.get("label")), system.get("cpu_model")
    threads = settings.get("threads") or "runtime default"
    cores = settings.get("affinity")
    pinned = f", pinned to {settings['cpus']}" if settings.get("cpus") else ""
    details = [str(v) for v in (cpu, system.get("machine")) if v and str(v) not in label]
    cpu_text = "".join(f"{d}, " for d in details)
    return (f"{label} — {cpu_text}{len(cores) if cores else system.get('cpu_count')} "
            f"cores{pinned}, {system.get('kernel')}, Python {system.get('python')}; threads: {threads}; "
            f"{settings.get('warmup')} warm-up + {settings.get('runs')} timed runs each, interleaved")


def print_result(document: dict, stream=None) -> None:
    """The result table: one row per artifact, ratios against the baseline, instructions when counted."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    stream = stream or sys.stdout
    console = Console(file=stream, width=None if stream.isatty() else 200, soft_wrap=False)
    artifacts = document["artifacts"]
    counted = [instructions_per_inference(a) for a in artifacts]
    with_instructions = any(c is not None for c in counted)
    baseline_index = document.get("baseline")
    base_instr = next((c for a, c in zip(artifacts, counted) if a.get("index") == baseline_index), None)

    table = Table(title=Text(system_line(document)), title_justify="left")
    columns = ["artifact", "backend", "load ms", "first ms", "p50 ms", "p90 ms", "p99 ms", "mean ± std ms",
               "img/s", "peak RSS MiB", "size MB", "× baseline (median [p10–p90])"]
    with_post = any(a.get("postprocess_ms") for a in artifacts)
    if with_post:  # detection: the board's numpy post-processing, and inference + it
        columns += ["post-proc. ms", "p50 + post ms"]
    if with_instructions:
        columns += ["instructions/inference", "× baseline (instr.)"]
    for column in columns:
        table.add_column(Text(column), justify="left" if column in ("artifact", "backend") else "right",
                         overflow="fold")
    for artifact, instructions in zip(artifacts, counted):
        is_baseline = artifact.get("index") == baseline_index
        name = Text(artifact.get("name", "?"))
        if artifact.get("status") != "ok":
            table.add_row(name, Text("FAILED", style="bold red"), *["–"] * (len(columns) - 2))
            continue
        lat = artifact.get("latency_ms") or {}
        backend = f"{artifact.get('backend')} {artifact.get('backend_version') or ''}".strip()
        rss = artifact.get("peak_rss_bytes")
        row = [name, backend, ms(artifact.get("load_ms")), ms(artifact.get("first_inference_ms")), ms(lat.get("p50")),
               ms(lat.get("p90")), ms(lat.get("p99")),
               f"{ms(lat.get('mean'))} ± {ms(lat.get('std'))}" if lat else "–",
               f"{artifact['throughput_ips']:.1f}" if artifact.get("throughput_ips") else "–",
               f"{rss / MIB:.0f}" if rss else "–",
               f"{artifact['size_bytes'] / 1e6:.1f}" if artifact.get("size_bytes") else "–",
               ratio_text(artifact.get("ratio_vs_baseline"), is_baseline)]
        if with_post:
            post = (artifact.get("postprocess_ms") or {}).get("median")
            row += [ms(post), ms(lat["p50"] + post) if post is not None and lat.get("p50") is not None else "–"]
        if with_instructions:
            row += [count(instructions),
                    "1 (baseline)" if is_baseline and instructions is not None else
                    f"{instructions / base_instr:.3f}" if instructions is not None and base_instr else "–"]
        table.add_row(*(cell if isinstance(cell, Text) else Text(cell) for cell in row))
    console.print(table)
    loop = document.get("timed_loop")
    notes = []
    if loop:
        notes.append(f"bench overhead {loop['overhead_per_run_us']:.1f} µs per timed run "
                     f"({100 * (loop.get('overhead_fraction') or 0):.3f}% of inference time)")
    if document.get("interrupted"):
        notes.append(f"INTERRUPTED after {document.get('rounds_completed', 0)} complete rounds: partial results")
    for note in notes:
        console.print(Text(note), soft_wrap=True)
    for artifact in artifacts:
        if artifact.get("profile"):
            print_profile(console, artifact)


PROFILE_ROWS = 12


def print_profile(console, artifact: dict) -> None:
    """``--profile``: an artifact's instructions by kernel family, then its costliest functions."""
    from rich.table import Table
    from rich.text import Text

    profile = artifact["profile"]
    table = Table(title=Text(f"{artifact.get('name')}: {count(profile['instructions_per_inference'])} instructions "
                             "per inference, by kernel family and function"), title_justify="left")
    for column in ("share", "instructions", "kernel family", "library", "function"):
        table.add_column(Text(column), justify="right" if column in ("share", "instructions") else "left",
                         overflow="fold")
    for family in profile["families"][:PROFILE_ROWS]:
        table.add_row(f"{100 * family['share']:.1f}%", count(family["instructions"]), Text(family["family"]), "", "")
    table.add_section()
    for row in profile["top"][:PROFILE_ROWS]:
        table.add_row(f"{100 * row['share']:.1f}%", count(row["instructions"]), Text(row["family"]),
                      Text(row["library"]), Text(short_symbol(row["symbol"])))
    console.print(table)


def short_symbol(symbol: str, width: int = 90) -> str:
    """A demangled C++ name without its argument list and template arguments past ``width``."""
    name = symbol.split("(", 1)[0] if "(" in symbol and not symbol.startswith("(") else symbol
    return name if len(name) <= width else name[:width - 1] + "…"
