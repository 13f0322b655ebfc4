"""The on-device benchmark: artifacts measured interleaved (A B A B …) in one process.

Board side: numpy + the standard library + ``edgeformer_deploy.runtime`` (rich only for the optional
progress bar, passed in by the CLI). No torch, no matplotlib, nothing from ``models`` / ``export``.

Per artifact: peak RSS in a fresh child process (``python -m edgeformer_deploy.bench.rss``), then in this
process load/init time, the first inference, ``warmup`` untimed runs and ``runs`` timed runs. Warm-up and
timed runs go round by round over all artifacts that loaded, so drift of a noisy machine (thermal
throttling, a background job) hits every artifact equally; the ratio to the baseline (the first artifact
that loaded) is taken round by round. Each timed inference is one ``counted_region`` (the emulated-board
instruction counter's marker) and one entry of ``timed_order``. The document is described in SCHEMA.md.
"""
from __future__ import annotations

import datetime
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Union

import numpy as np

from ..errors import EdgeformerError
from . import marker
from .schema import SCHEMA, instructions_per_inference  # noqa: F401  (re-exported for emulate.py)
from .schema import write_result  # noqa: F401
from .system import affinity, backend_version, describe, peak_rss

RSS_RUNS = 3  # inferences after the first one in the peak-RSS child
SAMPLE_IMAGE = "chelsea.jpg"
MIB = 1024 * 1024


class BenchError(EdgeformerError):
    """Bad benchmark input (no artifacts, bad run counts, bad CPU list): the CLI prints one line."""


class Progress:
    """What the runner reports while it works; this one shows nothing (the CLI passes a rich bar)."""

    def stage(self, description: str, total: int) -> None:
        pass

    def advance(self, steps: int = 1) -> None:
        pass


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, EdgeformerError):
        return first or type(exc).__name__
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def artifact_precision(manifest: dict, path: Path, input_dtype: Optional[str] = None) -> str:
    """fp32 / fp16 / int8 … from the manifest (``precision`` or ``<format>.precision``), else the file name."""
    fmt = str(manifest.get("format", "")).split("_")[0]
    for source in (manifest, manifest.get(fmt) if isinstance(manifest.get(fmt), dict) else {}):
        if isinstance(source.get("precision"), str):
            return source["precision"]
    stem = path.stem.lower()
    for precision in ("int8", "uint8", "fp16", "fp32"):
        if stem.endswith("_" + precision):
            return precision
    return {"float16": "fp16", "int8": "int8"}.get(input_dtype or "", "fp32")


def sample_input(predictor) -> np.ndarray:
    """The input of every measured inference: a real photo (shipped sample) preprocessed exactly as
    ``edgeformer-predict`` does, in the artifact's layout/dtype, repeated to its fixed batch."""
    from ..runtime.preprocess import SAMPLES_DIR

    image = SAMPLES_DIR / SAMPLE_IMAGE
    if not image.is_file():  # a package without its assets: a fixed pseudo-random picture
        image = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    tensor = predictor.preprocess([image])
    batch = predictor.batch or 1
    if batch > 1:
        tensor = np.repeat(tensor, batch, axis=0)
    return np.ascontiguousarray(tensor)


def latency_stats(seconds: Sequence[float]) -> Optional[dict]:
    """min / mean / std (sample) / p50 / p90 / p99 / max in ms of timed runs given in seconds."""
    if not len(seconds):
        return None
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"n": int(ms.size), "min": _r(ms.min()), "mean": _r(ms.mean()),
            "std": _r(ms.std(ddof=1) if ms.size > 1 else 0.0), "p50": _r(p50), "p90": _r(p90),
            "p99": _r(p99), "max": _r(ms.max())}


def round_ratios(samples: Sequence[float], baseline: Sequence[float]) -> List[float]:
    """Per interleaved round i: samples[i] / baseline[i] (sample i of every artifact is from round i)."""
    n = min(len(samples), len(baseline))
    return [samples[i] / baseline[i] for i in range(n) if baseline[i] > 0]


def ratio_summary(ratios: Sequence[float]) -> Optional[dict]:
    if not len(ratios):
        return None
    p10, p50, p90 = np.percentile(np.asarray(ratios, dtype=np.float64), [10, 50, 90])
    return {"median": _r(p50, 5), "p10": _r(p10, 5), "p90": _r(p90, 5), "rounds": len(ratios)}


def _r(value, digits: int = 4) -> float:
    return round(float(value), digits)


class _Entry:
    """One artifact during the run: its record in the document plus the live objects."""

    def __init__(self, index: int, path: Path):
        self.path = path
        self.predictor = None
        self.x = None
        self.run = None  # the backend's run(tensor), called directly in the timed loop
        self.samples: List[float] = []  # seconds, one per completed timed run, in round order
        self.record: dict = {"index": index, "path": str(path), "name": path.name, "status": "pending",
                             "error": None, "rss": None}

    @property
    def ok(self) -> bool:
        return self.record["status"] in ("pending", "ok")

    def fail(self, message: str) -> None:
        self.record["status"], self.record["error"] = "failed", message
        self.close()

    def close(self) -> None:
        if self.predictor is not None:
            try:
                self.predictor.close()
            except Exception:
                pass
            self.predictor = None


def validate(paths, warmup: int, runs: int, threads: Optional[int]) -> List[Path]:
    if not paths:
        raise BenchError("no artifacts given")
    if runs < 1:
        raise BenchError(f"--runs must be at least 1 (got {runs})")
    if warmup < 0:
        raise BenchError(f"--warmup must be 0 or more (got {warmup})")
    if threads is not None and threads < 1:
        raise BenchError(f"--threads must be at least 1 (got {threads})")
    return [Path(p) for p in paths]


def run_benchmark(paths: Sequence[Union[str, Path]], warmup: int = 10, runs: int = 100,
                  threads: Optional[int] = None, cpus: Optional[str] = None, *, backend: str = "auto",
                  npu_cores: str = "auto", measure_rss: bool = True, rss_runs: int = RSS_RUNS,
                  label: Optional[str] = None, progress: Optional[Progress] = None,
                  on_loaded: Optional[Callable[[dict], None]] = None) -> dict:
    """Benchmark ``paths`` interleaved; returns the result document (SCHEMA.md).

    Artifacts that fail to load (or fail later) become ``"status": "failed"`` rows and the others go on.
    Ctrl-C (KeyboardInterrupt) stops the run and returns what was gathered, with ``"interrupted": true``.
    Raises :class:`BenchError` / ``PredictError`` for bad arguments only (before anything runs).
    ``measure_rss=False`` skips the peak-RSS child processes (e.g. under an instruction-counting
    emulator). ``on_loaded(document)`` is called once every artifact is loaded, before the warm-up.
    """
    from ..runtime.cpu import parse_cpus, pin_to_cpus

    paths = validate(paths, warmup, runs, threads)
    progress = progress or Progress()
    if cpus is not None:
        pin_to_cpus(parse_cpus(cpus))  # before any runtime starts its threads: they inherit it
    started = time.perf_counter()
    entries = [_Entry(i, p) for i, p in enumerate(paths)]
    document = {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "interrupted": False,
        "system": describe(label),
        "settings": {"warmup": warmup, "runs": runs, "threads": threads, "cpus": cpus, "affinity": affinity(),
                     "backend": backend, "npu_cores": npu_cores, "measure_rss": measure_rss,
                     "rss_runs": rss_runs if measure_rss else None, "input": f"sample photo {SAMPLE_IMAGE}",
                     "instruction_markers": marker.enabled()},
        "baseline": None,
        "artifacts": [e.record for e in entries],
        "timed_order": [],
        "rounds_completed": 0,
        "timed_loop": None,
    }
    timed_order: List[int] = document["timed_order"]
    loop = {"start": None, "end": None}
    try:
        if measure_rss:
            progress.stage("peak RSS (child processes)", len(entries))
            for entry in entries:
                entry.record["rss"] = measure_peak_rss(entry.path, threads, cpus, backend, npu_cores, rss_runs)
                progress.advance()
        progress.stage("loading", len(entries))
        for entry in entries:
            _load(entry, threads, backend, npu_cores)
            progress.advance()
        active = [e for e in entries if e.ok]
        if active:
            document["baseline"] = active[0].record["index"]
        if on_loaded is not None:
            on_loaded(document)
        progress.stage("warm-up", warmup * len(active))
        for _ in range(warmup):
            for entry in list(active):
                try:
                    entry.run(entry.x)
                except Exception as exc:
                    entry.fail(f"inference failed during warm-up: {one_line(exc)}")
                    active.remove(entry)
            progress.advance(len(active))
        progress.stage("timed runs (interleaved)", runs * len(active))
        _timed_loop(active, runs, timed_order, loop, progress)
    except KeyboardInterrupt:
        document["interrupted"] = True
    finally:
        for entry in entries:
            entry.close()
    _finish(document, entries, timed_order, loop)
    document["wall_seconds"] = _r(time.perf_counter() - started, 3)
    peak, source = peak_rss()
    document["process_peak_rss_bytes"] = peak
    return document


def _timed_loop(active: List[_Entry], runs: int, timed_order: List[int], loop: dict, progress: Progress) -> None:
    """The measured loop: per round, each artifact once, each inference one counted region.
    Nothing but the inference sits between the two clock reads; the GC is off meanwhile."""
    counted_region = marker.counted_region
    markers = marker.enabled()
    clock = time.perf_counter
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    loop["start"] = clock()
    try:
        for _ in range(runs):
            for entry in tuple(active):
                run, x = entry.run, entry.x
                try:
                    with counted_region(markers):
                        t0 = clock()
                        run(x)
                        t1 = clock()
                except Exception as exc:  # KeyboardInterrupt is no Exception: it ends the loop
                    entry.fail(f"inference failed in timed run {len(entry.samples) + 1}: {one_line(exc)}")
                    active.remove(entry)
                    continue
                entry.samples.append(t1 - t0)
                timed_order.append(entry.record["index"])
            progress.advance(len(active))
            if not active:
                break
    finally:
        loop["end"] = clock()
        if gc_was_enabled:
            gc.enable()


def _load(entry: _Entry, threads: Optional[int], backend: str, npu_cores: str) -> None:
    from ..runtime.artifact import load_artifact
    from ..runtime.predictor import Predictor

    record = entry.record
    try:
        size = entry.path.stat().st_size
    except OSError:
        size = None
    record["size_bytes"] = size
    try:
        t0 = time.perf_counter()
        artifact = load_artifact(entry.path, check_sha256=True)
        t1 = time.perf_counter()
        _describe_artifact(record, artifact.manifest, entry.path)
        predictor = Predictor(entry.path, backend=backend, threads=threads, npu_cores=npu_cores,
                              check_sha256=False)
        t2 = time.perf_counter()
        entry.predictor = predictor
        record.update({"backend": predictor.backend_name, "backend_version": backend_version(predictor.backend_name),
                       "precision": artifact_precision(artifact.manifest, entry.path, artifact.input.dtype),
                       "batch": predictor.batch or 1, "input_dtype": artifact.input.dtype,
                       "manifest_check_ms": _r((t1 - t0) * 1e3, 3), "load_ms": _r((t2 - t1) * 1e3, 3)})
        entry.x = sample_input(predictor)
        entry.run = predictor.backend.run
        t3 = time.perf_counter()
        out = entry.run(entry.x)
        t4 = time.perf_counter()
        record["first_inference_ms"] = _r((t4 - t3) * 1e3, 3)
        record["task"] = predictor.task
        if predictor.task == "classification":
            record["sample_top1"] = int(np.argmax(np.asarray(out[0]).reshape(len(entry.x), -1)[0]))
        else:
            record["postprocess_ms"] = postprocess_ms(predictor, entry.x)
        record["status"] = "ok"
    except Exception as exc:  # PredictError: one clear line; anything else: its type and first line
        if "model" not in record:
            try:
                _describe_artifact(record, load_artifact(entry.path, check_sha256=False).manifest, entry.path)
            except Exception:
                pass
        entry.fail(one_line(exc))


POSTPROCESS_RUNS = 20


def model_family(described: dict) -> Optional[str]:
    """The backbone family of a manifest or a result row (their "family"), else read from the model name
    (manifests and results made before the field)."""
    family = described.get("family")
    if isinstance(family, str):
        return family
    name = str(described.get("model") or described.get("name") or "")
    return next((f for f in ("mobilevit", "edgeformer") if f in name), None)


def postprocess_ms(predictor, x: np.ndarray) -> dict:
    """Median (and p90) time of the task's board-side post-processing of one image's outputs (detection:
    softmax, decode, NMS; segmentation: the mask at the network size), measured on the sample input's real
    outputs, outside the interleaved loop."""
    outputs = predictor.session.outputs(x)
    head, size = predictor.head, predictor.imgsz
    if predictor.task == "detection":
        def once():
            return {"detections": len(head.raw(head.rows(outputs), 0))}
    else:
        def once():
            return {"mask": [size, size], "classes": len(head.classes(head.mask(outputs, 0, size, size)))}
    times = []
    for _ in range(POSTPROCESS_RUNS):
        started = time.perf_counter()
        result = once()
        times.append(time.perf_counter() - started)
    p50, p90 = np.percentile(np.asarray(times) * 1e3, [50, 90])
    return {"median": _r(p50, 4), "p90": _r(p90, 4), "runs": POSTPROCESS_RUNS, **result}


def _describe_artifact(record: dict, manifest: dict, path: Path) -> None:
    weights = manifest.get("weights") if isinstance(manifest.get("weights"), dict) else {}
    record.update({"model": manifest.get("model"), "family": model_family(manifest), "format": manifest.get("format"),
                   "precision": artifact_precision(manifest, path), "imgsz": manifest.get("imgsz"),
                   "sha256": manifest.get("sha256"),
                   "random_weights": bool(weights.get("random")) if weights else None})


def _finish(document: dict, entries: List[_Entry], timed_order: List[int], loop: dict) -> None:
    """Statistics, ratios and the loop's own overhead, from whatever was gathered."""
    baseline = next((e for e in entries if e.record["index"] == document["baseline"]), None)
    for entry in entries:
        record = entry.record
        if record["status"] == "pending":  # interrupted before it was loaded
            record["status"], record["error"] = "failed", "not measured (interrupted)"
        record["timed_runs"] = len(entry.samples)
        record["samples_ms"] = [_r(s * 1e3, 5) for s in entry.samples]
        stats = latency_stats(entry.samples)
        record["latency_ms"] = stats
        batch = record.get("batch") or 1
        record["throughput_ips"] = _r(batch * 1e3 / stats["mean"], 3) if stats and stats["mean"] > 0 else None
        rss = record.get("rss") or {}
        record["peak_rss_bytes"] = rss.get("peak_rss_bytes")
        record["peak_rss_mib"] = _r(rss["peak_rss_bytes"] / MIB, 1) if rss.get("peak_rss_bytes") else None
        ratios = round_ratios(entry.samples, baseline.samples) if baseline is not None else []
        record["ratio_vs_baseline"] = ratio_summary(ratios)
    counts = [len(e.samples) for e in entries if e.record["status"] == "ok"]
    document["rounds_completed"] = min(counts) if counts else 0
    if loop["start"] is not None and timed_order:
        wall = loop["end"] - loop["start"]
        measured = sum(sum(e.samples) for e in entries)
        document["timed_loop"] = {"wall_ms": _r(wall * 1e3, 3), "measured_ms": _r(measured * 1e3, 3),
                                  "overhead_per_run_us": _r((wall - measured) / len(timed_order) * 1e6, 3),
                                  "overhead_fraction": _r((wall - measured) / measured, 6) if measured else None}


def measure_peak_rss(path: Path, threads: Optional[int], cpus: Optional[str], backend: str, npu_cores: str,
                     runs: int = RSS_RUNS) -> dict:
    """Peak RSS of a fresh ``python -m edgeformer_deploy.bench.rss`` that loads ``path``, runs the first
    inference and ``runs`` more, and reports VmHWM (or ru_maxrss). One artifact per process, so the
    numbers do not mix the way they would in the interleaved process."""
    command = [sys.executable, "-m", "edgeformer_deploy.bench.rss", str(path), "--runs", str(runs),
               "--backend", backend, "--npu-cores", npu_cores]
    if threads:
        command += ["--threads", str(threads)]
    if cpus:
        command += ["--cpus", cpus]
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])  # the child imports this very package
    env["PYTHONPATH"] = os.pathsep.join([package_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    except OSError as exc:
        return {"peak_rss_bytes": None, "error": f"cannot start {sys.executable}: {exc.strerror}"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        return {"peak_rss_bytes": None, "error": f"peak-RSS child failed: {tail}"}
    if done.returncode != 0 and "error" not in result:
        result["error"] = f"peak-RSS child failed with exit code {done.returncode}"
    result.setdefault("peak_rss_bytes", None)
    return result


def exit_code(document: dict) -> int:
    """130 when interrupted, 1 when any artifact failed, else 0."""
    if document.get("interrupted"):
        return 130
    return 1 if any(a.get("status") != "ok" for a in document["artifacts"]) else 0


__all__ = ["run_benchmark", "write_result", "exit_code", "BenchError", "Progress", "SCHEMA",
           "latency_stats", "round_ratios", "ratio_summary", "instructions_per_inference"]
