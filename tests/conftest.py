from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OFFICIAL = Path(os.environ.get("EDGEFORMER_FIXTURES", REPO.parent / "shared" / "fixtures" / "official"))


# Scheduling for pytest-xdist (`-n auto`, what CI runs): a test file is one unit of work, except files sharing
# expensive session fixtures (the converted TFLite/RKNN artifacts; the emulated boards), which travel together
# so nothing is built twice. The longest groups go first so no worker idles at the end. (A scheduler of our
# own: xdist 3.8's `--dist loadgroup` marks do not reach pytest 9's node ids.)
GROUPS = {"test_export_tflite.py": "converters", "test_official_pipeline.py": "converters",
          "test_export_rknn.py": "converters", "test_arm_boards.py": "arm", "test_bench_emulate.py": "arm"}
SLOW = ("converters", "arm", "test_detection.py", "test_segmentation.py")


def _group(item) -> str:
    return GROUPS.get(item.path.name, item.path.name)


def pytest_collection_modifyitems(config, items):
    rank = {group: i for i, group in enumerate(SLOW)}
    for item in items:
        if _group(item) in rank:
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: rank.get(_group(item), len(rank)))  # stable: file order within a group


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: fine without it (serial runs)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class FileGroups(LoadScopeScheduling):
        """One scope per test file, or per GROUPS entry."""

        def _split_scope(self, nodeid: str) -> str:
            name = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
            return GROUPS.get(name, name)

    return FileGroups(config, log)


@pytest.fixture(scope="session")
def det_seg_dir() -> Path:
    """The official-code SSD / DeepLabv3 fixtures, beside the classification ones."""
    folder = OFFICIAL.parent / "official-det-seg"
    if not (folder / "ssd_edgeformer_s.pt").is_file():
        pytest.fail(f"detection/segmentation fixtures not found in {folder}")
    return folder


@pytest.fixture(scope="session")
def official_dir() -> Path:
    if not (OFFICIAL / "edgeformer_s.pt").is_file():
        pytest.fail(f"official fixtures not found in {OFFICIAL} (set EDGEFORMER_FIXTURES)")
    return OFFICIAL


def _tflite_pairs(out: Path, official_dir: Path, imgsz: int) -> dict:
    """EdgeFormer-S and MobileViT-S (official-code weights) as TFLite fp32 and int8 through the CLI, keyed
    (model, precision); int8 calibrated on a folder of real photos (the shipped samples)."""
    from edgeformer_deploy.runtime.preprocess import SAMPLES_DIR

    from helpers import run_cli

    artifacts = {}
    for name in ("edgeformer_s", "mobilevit_s"):
        for precision, flags in (("fp32", []), ("int8", ["--int8", "--data", SAMPLES_DIR])):
            result = run_cli("edgeformer-export", "--model", name, "--weights", official_dir / f"{name}.pt",
                             "--format", "tflite", "--imgsz", imgsz, "--output", out, *flags, timeout=1200,
                             offline=True)
            assert result.returncode == 0, result.stderr
            suffix = "" if precision == "fp32" else "_int8"
            artifacts[(name, precision)] = out / f"{name}_{imgsz}{suffix}.tflite"
    return artifacts


@pytest.fixture(scope="session")
def tflite_artifacts(tmp_path_factory, official_dir):
    """The pair at the official 256x256, exported once per session."""
    return _tflite_pairs(tmp_path_factory.mktemp("tflite"), official_dir, 256)


@pytest.fixture(scope="session")
def tflite_64(tmp_path_factory, official_dir) -> dict:
    """The pair at 64x64: what the emulated ARM boards run (test_arm_boards, test_bench_emulate share it)."""
    return _tflite_pairs(tmp_path_factory.mktemp("tflite-64"), official_dir, 64)


# (model, target, int8): both models at the default target in fp16, and int8 for one smaller NPU
RKNN_CASES = [("edgeformer_s", "rk3588", False), ("mobilevit_s", "rk3588", False),
              ("edgeformer_s", "rk3566", True), ("mobilevit_s", "rk3566", True)]


@pytest.fixture(scope="session")
def rknn_artifacts(tmp_path_factory, official_dir):
    """The RKNN exports of the official-code fixtures (fp16 at rk3588, int8 at rk3566), once per session."""
    from edgeformer_deploy.runtime.preprocess import SAMPLES_DIR

    from helpers import run_cli

    out = tmp_path_factory.mktemp("rknn")
    artifacts = {}
    for model, target, int8 in RKNN_CASES:
        flags = ["--int8", "--data", SAMPLES_DIR, "--analyze"] if int8 else []
        result = run_cli("edgeformer-export", "--model", model, "--weights", official_dir / f"{model}.pt",
                         "--format", "rknn", "--target", target, "--output", out, *flags, timeout=1200,
                         offline=True)
        assert result.returncode == 0, result.stderr
        artifacts[(model, target, int8)] = out / f"{model}_256_{target}{'_int8' if int8 else ''}.rknn"
    return artifacts
