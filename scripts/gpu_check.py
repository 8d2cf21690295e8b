#!/usr/bin/env python
"""The GPU check: one command for a short loan of a GPU machine (run it through scripts/gpu_check.sh).

    scripts/gpu_check.sh --data DIR              # everything, at most --budget-minutes (default 8)
    scripts/gpu_check.sh --dry-run               # the plan and the commands, nothing run (no GPU needed)
    scripts/gpu_check.sh --quick --skip real     # kernels, tests and benchmarks only, shorter runs

Steps, in order (each timed, each with its own log under OUT/logs/, each stopped at its timeout):

    env               nvidia-smi, torch / CUDA / nvcc versions, the GPU
    preprocess        `synctalk preprocess` of a real clip on cuda (runs in the background from here on)
    build             `python -m cuda_ext.build --kind all`, one process per op (CUDA and C++ kernels), and
                      nerfacc's CUDA extension (JIT-built on first use), side by side
    cuda_tests        pytest on every test that touches CUDA; a CUDA test skipped for want of a GPU fails
    smoke             tests/test_device_smoke.py, its cuda half (the same rule for skips)
    bench_encoding    scripts/bench_encoding.py, cuda and cpu backends
    bench_render      scripts/bench_render.py --device cuda, torch and cuda backends
    bench_train_step  scripts/bench_train_step.py --device cuda (step time), then --ops --device cuda (syncs)
    train             `synctalk train --device cuda train.budget_minutes=3` on the preprocessed clip
    evaluate          `synctalk evaluate --max-frames 8` of that workspace
    bench_avatar      scripts/bench_avatar.py on that workspace (frames/s per size, streaming latency)
    train_gaussian    `synctalk train --config gaussian --device cuda` (the Gaussian head at 512², gsplat)
    evaluate_gaussian `synctalk evaluate --max-frames 8` of that workspace
    bench_gaussian    scripts/bench_avatar.py on it at 256² and 512² (frames/s)

Groups for --only / --skip: tests (cuda_tests, smoke), benches (the bench_* steps), real (preprocess, train,
evaluate, bench_avatar and the three Gaussian steps), gaussian (train_gaussian, evaluate_gaussian,
bench_gaussian). Benchmarks wait for background work first, so their timings are not shared.

Real data: --data DIR holding video/<clip> (and models/face_landmarker.task, audio/jfk_11s.flac), else
$SYNCTALK_TEST_DATA, else ../shared/data, shared/data or gpu_data/ beside the repository. The GPU machine gets the
repository without ../shared: copy the data into an ignored folder of the checkout and carry it. --subject DIR
trains on a subject preprocessed elsewhere instead (no preprocess step).

Outputs under --out (default $OUT when set, else gpu_check_out/): report.md (a table: step, status, seconds, key
figures; the log's tail for failures), report.json, logs/<step>.log and the benchmarks' JSON. --pack (the default
when writing to $OUT) packs logs/ into logs.tar.gz so that few files come back. Work files (the subject, the
training workspace) go to --work (default gpu_check_work/).

Exit status: 0 every step ok, 1 a step failed, timed out or could not run, 2 bad usage or no CUDA GPU visible.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
DEFAULT_CLIP = "may_5s_25fps.mp4"
STREAM_AUDIO = "audio/jfk_11s.flac"
STATUSES = ("ok", "failed", "skipped", "timeout")
TAIL_LINES = 40
MIN_STEP_S = 5.0   # a step is not started with less of the overall budget left


# --------------------------------------------------------------------------------------------------- the plan

@dataclass
class Command:
    """One process of a step: argv, and an optional short label shown in plans instead of a long argv."""

    argv: list[str]
    label: str | None = None

    def display(self) -> str:
        return self.label or shlex.join(self.argv)


@dataclass
class Context:
    """What the step builders need: options, folders, the Python that runs everything, the data found."""

    python: str
    out: Path
    work: Path
    data: Path | None
    clip: Path | None
    quick: bool = False
    train_minutes: float = 3.0
    given_subject: Path | None = None   # --subject: a subject preprocessed elsewhere (no preprocess step)

    @property
    def logs(self) -> Path:
        return self.out / "logs"

    @property
    def subject(self) -> Path:
        if self.given_subject is not None:
            return self.given_subject
        return self.work / f"subject_{self.clip.stem if self.clip else 'clip'}"

    @property
    def workspace(self) -> Path:
        return self.work / f"ws_{self.subject.name.removeprefix('subject_')}"

    @property
    def gaussian_workspace(self) -> Path:
        return self.work / f"ws_gaussian_{self.subject.name.removeprefix('subject_')}"

    def has_input(self, step: Step) -> bool:
        """Whether a real-clip step has what it starts from: the clip (preprocess) or a subject (the others)."""
        if step.needs_data == "clip":
            return self.clip is not None
        return not step.needs_data or self.clip is not None or self.given_subject is not None

    def synctalk(self, *args: str) -> list[str]:
        return [self.python, "-m", "synctalk.cli.main", *args]

    def script(self, name: str, *args: str) -> list[str]:
        return [self.python, str(SCRIPTS / name), *args]

    def pytest(self, *args: str) -> list[str]:
        return [self.python, "-m", "pytest", "-p", "gpu_check_plugin", "-p", "no:cacheprovider", "-rs", *args]

    def env(self) -> dict[str, str]:
        """Variables set for every step (on top of the caller's environment)."""
        paths = [str(ROOT), str(SCRIPTS)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        env = {"PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1", "SYNCTALK_OFFLINE": "1"}
        if self.data is not None:
            env["SYNCTALK_TEST_DATA"] = str(self.data)
            if (self.data / "models").is_dir():
                env["SYNCTALK_MODELS"] = str(self.data / "models")
        return env


@dataclass
class Step:
    """One step of the check. `commands(ctx)` builds its processes; `figures(ctx, log_text)` reads the key
    numbers after it ran and may raise StepCheckFailed when the output shows a problem the exit code hides."""

    name: str
    title: str
    timeout_s: float
    quick_timeout_s: float
    commands: Callable[[Context], list[Command]]
    needs: tuple[str, ...] = ()        # steps whose failure makes this one pointless (it waits for them)
    needs_data: str = ""               # "clip": needs the real clip; "subject": the clip or --subject
    background: bool = False           # started, then the following steps run beside it
    exclusive: bool = False            # waits for background steps first (timings)
    parallel: bool = False             # the commands run side by side
    fresh: Callable[[Context], list[Path]] | None = None   # folders removed before the step runs
    figures: Callable[[Context, str], dict] | None = None


class StepCheckFailed(Exception):
    """The step's processes exited 0 but its output shows a failure (e.g. no cuda rows in a benchmark)."""

    def __init__(self, message: str, figures: dict | None = None):
        super().__init__(message)
        self.figures = figures or {}


ENV_SNIPPET = r"""
import importlib.metadata, json, os, platform, re, shutil, subprocess, sys
def run(cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        return (p.stdout + p.stderr).strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unavailable: {exc}"
info = {"python": platform.python_version(), "executable": sys.executable, "cpus": os.cpu_count(),
        "machine": platform.machine()}
print("$ nvidia-smi"); print(run(["nvidia-smi"]), flush=True)
import torch
from torch.utils import cpp_extension
info.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),
            cudnn=torch.backends.cudnn.version() if torch.cuda.is_available() else None,
            cuda_home=cpp_extension.CUDA_HOME, ninja=shutil.which("ninja"),
            arch_list=os.environ.get("TORCH_CUDA_ARCH_LIST"))
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=p.name, capability=f"{p.major}.{p.minor}", memory_gib=round(p.total_memory / 2**30, 1),
                multiprocessors=p.multi_processor_count, gpus=torch.cuda.device_count())
nvcc = shutil.which("nvcc") or (os.path.join(cpp_extension.CUDA_HOME, "bin", "nvcc") if cpp_extension.CUDA_HOME
                                else None)
text = run([nvcc, "--version"]) if nvcc else "nvcc not found (no CUDA toolkit on PATH or CUDA_HOME)"
print("$ nvcc --version"); print(text)
m = re.search(r"release ([0-9.]+)", text)
info["nvcc"] = m.group(1) if m else None
for name in ("numpy", "nerfacc", "mediapipe", "gsplat", "ninja", "synctalk"):
    try:
        info[name + "_version"] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        info[name + "_version"] = None
print("GPU_CHECK_ENV " + json.dumps(info))
sys.exit(0 if torch.cuda.is_available() else 1)
"""


def _env_commands(ctx: Context) -> list[Command]:
    return [Command([ctx.python, "-c", ENV_SNIPPET], label=f"{ctx.python} -c '<nvidia-smi, torch, nvcc report>'")]


def _build_ops() -> list[str]:
    """Op folders of cuda_ext with kernel sources (the same rule as cuda_ext.build.available_ops, without torch)."""
    folder = ROOT / "cuda_ext"
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))
                  and (any(p.glob("*_cpu.cpp")) or any(p.glob("*.cu"))))


# nerfacc (a render backend, and one CUDA test compares against it) JIT-builds its own CUDA extension on first use,
# which takes minutes: built here, beside ours, so that the tests do not pay for it under their time limit.
NERFACC_SNIPPET = """
try:
    from nerfacc.cuda import _backend
    status = "ok" if _backend._C is not None else "not built (no nvcc?)"
except Exception as exc:
    status = f"not built: {type(exc).__name__}: {str(exc)[:300]}"
print("NERFACC_CUDA " + status)
"""


def _build_commands(ctx: Context) -> list[Command]:
    commands = [Command([ctx.python, "-m", "cuda_ext.build", "--ops", op, "--kind", "all"]) for op in _build_ops()]
    return commands + [Command([ctx.python, "-c", NERFACC_SNIPPET],
                               label=f"{ctx.python} -c '<import nerfacc.cuda: JIT-builds its CUDA extension>'")]


def cuda_test_files() -> list[str]:
    """Test files that mention CUDA (the plugin's --cuda-only then keeps the tests in them that do), without the
    smoke test, which is its own step."""
    files = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        if path.name in ("test_device_smoke.py", "test_gpu_check.py"):  # its own step; this check's CPU tests
            continue
        try:
            if re.search(r"cuda(?!_ext)", path.read_text(encoding="utf-8"), re.I):
                files.append(str(path.relative_to(ROOT)))
        except OSError:
            continue
    return files


def _cuda_tests_commands(ctx: Context) -> list[Command]:
    return [Command(ctx.pytest("--cuda-only", f"--junitxml={ctx.logs / 'cuda_tests.xml'}", *cuda_test_files()))]


def _smoke_commands(ctx: Context) -> list[Command]:
    return [Command(ctx.pytest("-k", "cuda", f"--junitxml={ctx.logs / 'smoke.xml'}", "tests/test_device_smoke.py"))]


def _bench_encoding_commands(ctx: Context) -> list[Command]:
    sizes = ["262144"] if ctx.quick else ["65536", "262144", "1048576"]
    backends = ["cuda"] if ctx.quick else ["cpu", "cuda"]
    return [Command(ctx.script("bench_encoding.py", "--backends", *backends, "--sizes", *sizes, "--repeats",
                               "3" if ctx.quick else "5", "--json", str(ctx.logs / "bench_encoding.json")))]


def _bench_render_commands(ctx: Context) -> list[Command]:
    rays = ["65536"] if ctx.quick else ["16384", "65536", "262144"]
    return [Command(ctx.script("bench_render.py", "--device", "cuda", "--backends", "torch", "cuda", "--rays", *rays,
                               "--repeats", "3" if ctx.quick else "5", "--json", str(ctx.logs / "bench_render.json")))]


def _bench_train_step_commands(ctx: Context) -> list[Command]:
    # the head step's time on cuda (synthetic 256² subject), then its operators (kernel launches) and the
    # synchronisations torch reports per steady step: what bounds the step on a GPU
    return [Command(ctx.script("bench_train_step.py", "--device", "cuda", "--steps", "50" if ctx.quick else "200")),
            Command(ctx.script("bench_train_step.py", "--ops", "--device", "cuda", "--steps", "10" if ctx.quick
                               else "20"))]


def _preprocess_commands(ctx: Context) -> list[Command]:
    sync_minutes = "0.25" if ctx.quick else "0.5"
    return [Command(ctx.synctalk("preprocess", str(ctx.clip), "-o", str(ctx.subject), "--device", "cuda",
                                 f"sync.subject_budget_minutes={sync_minutes}"))]


def _train_commands(ctx: Context) -> list[Command]:
    return [Command(ctx.synctalk("train", str(ctx.subject), "-w", str(ctx.workspace), "--device", "cuda",
                                 f"train.budget_minutes={ctx.train_minutes:g}"))]


def _evaluate_commands(ctx: Context) -> list[Command]:
    return [Command(ctx.synctalk("evaluate", str(ctx.workspace), "-o", str(ctx.work / "report"), "--device", "cuda",
                                 "--max-frames", "4" if ctx.quick else "8"))]


def _bench_avatar_commands(ctx: Context) -> list[Command]:
    if ctx.quick:
        args = ["--sizes", "256", "--frames", "5"]
    else:
        args = ["--sizes", "128", "256", "512", "--frames", "10", "--portrait"]
        if ctx.data is not None and (ctx.data / STREAM_AUDIO).is_file():
            args += ["--stream-audio", str(ctx.data / STREAM_AUDIO), "--stream-size", "256"]
    return [Command(ctx.script("bench_avatar.py", str(ctx.workspace), *args, "--device", "cuda"))]


# the Gaussian head (configs/gaussian.yaml, 512²; gsplat rasterizes): train, evaluate, frames/s
def _train_gaussian_commands(ctx: Context) -> list[Command]:
    return [Command(ctx.synctalk("train", str(ctx.subject), "-w", str(ctx.gaussian_workspace), "--device", "cuda",
                                 "--config", "gaussian", f"train.budget_minutes={ctx.train_minutes:g}"))]


def _evaluate_gaussian_commands(ctx: Context) -> list[Command]:
    return [Command(ctx.synctalk("evaluate", str(ctx.gaussian_workspace), "-o", str(ctx.work / "report_gaussian"),
                                 "--device", "cuda", "--max-frames", "4" if ctx.quick else "8"))]


def _bench_gaussian_commands(ctx: Context) -> list[Command]:
    frames = "10" if ctx.quick else "100"
    return [Command(ctx.script("bench_avatar.py", str(ctx.gaussian_workspace), "--sizes", "256", "512", "--frames",
                               frames, "--device", "cuda"))]


# ------------------------------------------------------------------------------------------ reading the outputs

def _json_line(text: str, prefix: str) -> dict:
    for line in reversed(text.splitlines()):
        if line.startswith(prefix):
            return json.loads(line[len(prefix):])
    return {}


def _env_figures(ctx: Context, text: str) -> dict:
    info = _json_line(text, "GPU_CHECK_ENV ")
    keys = ("gpu", "capability", "memory_gib", "torch", "torch_cuda", "nvcc", "cpus")
    return {k: info[k] for k in keys if info.get(k) is not None}


BUILD_ROW = re.compile(r"^(\w+)\s+(cpu|cuda)\s+(ok|-)\s+(.*)$")


def _build_figures(ctx: Context, text: str) -> dict:
    rows = [m.groups() for m in map(BUILD_ROW.match, text.splitlines()) if m and m.group(1) != "op"]
    figures = {}
    for kind in ("cuda", "cpu"):
        of_kind = [r for r in rows if r[1] == kind]
        if of_kind:
            figures[kind] = f"{sum(r[2] == 'ok' for r in of_kind)}/{len(of_kind)} built"
    broken = [f"{op} {kind}: {status}" for op, kind, ok, status in rows if ok != "ok"]
    if not rows:
        raise StepCheckFailed("no build table in the log (cuda_ext.build did not finish)")
    # an op without .cu sources has no CUDA kernel by design (the rasterizer's CUDA path is gsplat)
    cuda_broken = [b for b in broken if " cuda: " in b and "no cuda sources" not in b]
    if cuda_broken:
        raise StepCheckFailed("CUDA kernels not built: " + "; ".join(cuda_broken), figures)
    if broken:
        figures["not built"] = "; ".join(broken)
    nerfacc = re.search(r"^NERFACC_CUDA (.*)$", text, re.M)
    if nerfacc:
        figures["nerfacc cuda"] = nerfacc.group(1)[:200]
    return figures


def _junit_figures(path: Path) -> dict:
    if not path.is_file():
        return {}
    root = ElementTree.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    totals = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    passed = totals["tests"] - totals["failures"] - totals["errors"] - totals["skipped"]
    return {"passed": passed, "failed": totals["failures"] + totals["errors"], "skipped": totals["skipped"]}


def _pytest_figures(name: str) -> Callable[[Context, str], dict]:
    def figures(ctx: Context, text: str) -> dict:
        result = _junit_figures(ctx.logs / f"{name}.xml")
        if not result:
            match = re.search(r"(\d+) passed", text)
            result = {"passed": int(match.group(1))} if match else {}
        if result.get("passed", 0) == 0 and not result.get("failed"):
            raise StepCheckFailed("no test ran", result)
        return result

    return figures


def _bench_encoding_figures(ctx: Context, text: str) -> dict:
    path = ctx.logs / "bench_encoding.json"
    rows = json.loads(path.read_text())["rows"] if path.is_file() else []
    cuda = [r for r in rows if r["backend"] == "cuda"]
    if not cuda:
        raise StepCheckFailed("no cuda rows (the CUDA encodings did not build or did not run)")
    figures = {}
    for name in sorted({r["encoding"] for r in cuda}):
        best = max((r for r in cuda if r["encoding"] == name), key=lambda r: r["points"])
        figures[f"{name} cuda Mpoints/s @{best['points']}"] = round(best["points_per_s"] / 1e6, 1)
        cpu = [r for r in rows if r["encoding"] == name and r["backend"] == "cpu" and r["points"] == best["points"]]
        if cpu:
            figures[f"{name} cuda/cpu"] = f"{cpu[0]['median_s'] / best['median_s']:.0f}x"
    return figures


def _bench_render_figures(ctx: Context, text: str) -> dict:
    path = ctx.logs / "bench_render.json"
    cases = json.loads(path.read_text())["cases"] if path.is_file() else []
    cuda = [c for c in cases if c["backend"] == "cuda"]
    if not cuda:
        raise StepCheckFailed("no cuda rows (the march/composite kernels did not build or did not run)")
    best = max(cuda, key=lambda c: c["rays"])
    figures = {f"cuda rays/s @{best['rays']}": f"{best['rays_per_s']:.3g}",
               "cuda step ms": round(best["times"]["step"]["median_ms"], 2),
               "cuda step GB/s": round(best["step_gb_per_s"], 1)}
    torch_rows = [c for c in cases if c["backend"] == "torch" and c["rays"] == best["rays"]]
    if torch_rows:
        figures["cuda/torch"] = f"{best['rays_per_s'] / torch_rows[0]['rays_per_s']:.1f}x"
    return figures


def _bench_train_step_figures(ctx: Context, text: str) -> dict:
    figures = {}
    rows = re.findall(r"^\|[^|]*\|[^|]*\|\s*\d+\s*\|\s*([\d.]+)\s*\|", text, re.M)
    if rows:
        figures["s/step"] = float(rows[-1])
    match = re.search(r"(\d+) ATen ops per step.*?host syncs per step: (.*)", text)
    if match:
        figures.update({"ATen ops/step": int(match.group(1)), "host syncs/step": match.group(2).strip()})
    match = re.search(r"cuda: ([\d.]+) head steps/s; synchronisations torch reports: ([\d.]+) per step", text)
    if match:
        figures.update({"steps/s (steady)": float(match.group(1)), "cuda syncs/step": float(match.group(2))})
    return figures


def _preprocess_figures(ctx: Context, text: str) -> dict:
    match = re.search(r"(\d+) frames @ ([\d.]+) fps, total ([\d.]+) s", text)
    return {"clip": ctx.clip.name if ctx.clip else None, "frames": int(match.group(1)),
            "preprocess s": float(match.group(3))} if match else {}


def _train_figures(ctx: Context, text: str, workspace: Path | None = None) -> dict:
    workspace = workspace or ctx.workspace
    path = workspace / "train_log.json"
    if not path.is_file():
        raise StepCheckFailed(f"no {path.name} in {workspace}")
    stages = json.loads(path.read_text()).get("stages", {})
    figures = {}
    for name, stage in stages.items():
        steps, seconds = stage.get("step", 0), float(stage.get("seconds", 0))
        line = f"{stage.get('status', '?')}, {steps} steps, {seconds:.0f} s"
        if name == "head" and steps:
            line += f", {1000 * seconds / steps:.1f} ms/step"
        if isinstance(stage.get("val_psnr"), int | float):
            line += f", val PSNR {stage['val_psnr']:.2f} dB"
        figures[name] = line
    suffix = "" if workspace == ctx.workspace else "_gaussian"
    _copy_latest(workspace / "val", "*.png", ctx.logs / f"train_val{suffix}.png")
    return figures


def _copy_latest(folder: Path, pattern: str, target: Path) -> None:
    files = sorted(folder.glob(pattern), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    if files:
        shutil.copyfile(files[-1], target)


def _evaluate_figures(ctx: Context, text: str, report: Path | None = None) -> dict:
    report = report or ctx.work / "report"
    path = report / "metrics.json"
    if not path.is_file():
        raise StepCheckFailed(f"no metrics.json in {report}")
    result = json.loads(path.read_text())
    for name, target in (("metrics.md", "evaluate_metrics.md"), ("sheet.png", "evaluate_sheet.png")):
        if (report / name).is_file():
            kind = report.name.removeprefix("report").strip("_")          # "" or "gaussian"
            shutil.copyfile(report / name, ctx.logs / target.replace("evaluate_", f"evaluate_{kind}_" if kind
                                                                      else "evaluate_"))
    render = result.get("rows", {}).get("render", {})
    figures = {"frames": result.get("frames")}
    for key, value in render.items():
        if isinstance(value, int | float) and re.search(r"psnr|ssim|lmd|lse|fps", key, re.I):
            figures[key] = round(float(value), 3)
    return figures


AVATAR_ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|(?:\s*([\d.]+)\s*\|)?")


def _bench_avatar_figures(ctx: Context, text: str) -> dict:
    figures = {}
    for match in map(AVATAR_ROW.match, text.splitlines()):
        if match:
            size, fps, _, portrait = match.groups()
            figures[f"{size} px frames/s"] = float(fps)
            if portrait:
                figures[f"{size} px portrait frames/s"] = float(portrait)
    stream = re.search(r"stream at (\d+) px: (.*)", text)
    if stream:
        figures[f"stream {stream.group(1)} px"] = stream.group(2).strip()[:160]
    if not figures:
        raise StepCheckFailed("no frames/s rows in the output")
    return figures


STEPS: tuple[Step, ...] = (
    Step("env", "nvidia-smi, torch / CUDA / nvcc versions", 60, 60, _env_commands, figures=_env_figures),
    Step("preprocess", "synctalk preprocess of a real clip on cuda (in the background)", 300, 240,
         _preprocess_commands, needs_data="clip", background=True, fresh=None, figures=_preprocess_figures),
    Step("build", "python -m cuda_ext.build --kind all, one process per op", 360, 360, _build_commands,
         parallel=True, figures=_build_figures),
    Step("cuda_tests", "pytest on the tests that touch CUDA (CUDA skips are failures)", 240, 180,
         _cuda_tests_commands, needs=("build",), figures=_pytest_figures("cuda_tests")),
    Step("smoke", "tests/test_device_smoke.py on cuda", 240, 180, _smoke_commands, needs=("build",),
         figures=_pytest_figures("smoke")),
    Step("bench_encoding", "scripts/bench_encoding.py (cuda, cpu)", 90, 60, _bench_encoding_commands,
         needs=("build",), exclusive=True, figures=_bench_encoding_figures),
    Step("bench_render", "scripts/bench_render.py --device cuda (torch, cuda)", 90, 60, _bench_render_commands,
         needs=("build",), exclusive=True, figures=_bench_render_figures),
    Step("bench_train_step", "scripts/bench_train_step.py (head step)", 90, 60, _bench_train_step_commands,
         exclusive=True, figures=_bench_train_step_figures),
    Step("train", "synctalk train on cuda under train.budget_minutes", 300, 180, _train_commands,
         needs=("preprocess",), needs_data="subject", exclusive=True,
         fresh=lambda ctx: [ctx.workspace], figures=_train_figures),
    Step("evaluate", "synctalk evaluate of a few held-out frames", 150, 90, _evaluate_commands,
         needs=("train",), needs_data="subject", exclusive=True, fresh=lambda ctx: [ctx.work / "report"],
         figures=_evaluate_figures),
    Step("bench_avatar", "scripts/bench_avatar.py on the trained workspace", 120, 60, _bench_avatar_commands,
         needs=("train",), needs_data="subject", exclusive=True, figures=_bench_avatar_figures),
    Step("train_gaussian", "synctalk train --config gaussian (512², gsplat) under train.budget_minutes", 300, 180,
         _train_gaussian_commands, needs=("preprocess",), needs_data="subject", exclusive=True,
         fresh=lambda ctx: [ctx.gaussian_workspace],
         figures=lambda ctx, text: _train_figures(ctx, text, ctx.gaussian_workspace)),
    Step("evaluate_gaussian", "synctalk evaluate of the Gaussian workspace", 150, 90, _evaluate_gaussian_commands,
         needs=("train_gaussian",), needs_data="subject", exclusive=True,
         fresh=lambda ctx: [ctx.work / "report_gaussian"],
         figures=lambda ctx, text: _evaluate_figures(ctx, text, ctx.work / "report_gaussian")),
    Step("bench_gaussian", "scripts/bench_avatar.py on the Gaussian workspace (256², 512²)", 120, 60,
         _bench_gaussian_commands, needs=("train_gaussian",), needs_data="subject", exclusive=True,
         figures=_bench_avatar_figures),
)
STEP_NAMES: tuple[str, ...] = tuple(step.name for step in STEPS)
GROUPS: dict[str, tuple[str, ...]] = {
    "tests": ("cuda_tests", "smoke"),
    "benches": ("bench_encoding", "bench_render", "bench_train_step", "bench_avatar", "bench_gaussian"),
    "real": ("preprocess", "train", "evaluate", "bench_avatar", "train_gaussian", "evaluate_gaussian",
             "bench_gaussian"),
    "gaussian": ("train_gaussian", "evaluate_gaussian", "bench_gaussian"),
}


def step_by_name(name: str) -> Step:
    return next(step for step in STEPS if step.name == name)


def parse_steps(values: list[str] | None) -> list[str]:
    """'a,b' 'c' → step names in plan order; groups expanded. Raises ValueError naming an unknown step."""
    wanted: set[str] = set()
    for value in values or []:
        for name in filter(None, (part.strip() for part in value.split(","))):
            if name in GROUPS:
                wanted.update(GROUPS[name])
            elif name in STEP_NAMES:
                wanted.add(name)
            else:
                raise ValueError(f"unknown step '{name}' (steps: {', '.join(STEP_NAMES)}; groups: "
                                 f"{', '.join(GROUPS)})")
    return [name for name in STEP_NAMES if name in wanted]


def select_steps(only: list[str] | None, skip: list[str] | None) -> list[str]:
    """The steps to run: all (or --only's), less --skip's, in plan order."""
    chosen = parse_steps(only) if only else list(STEP_NAMES)
    skipped = set(parse_steps(skip))
    return [name for name in chosen if name not in skipped]


# ------------------------------------------------------------------------------------------------- running

@dataclass
class StepResult:
    name: str
    status: str                      # ok | failed | skipped | timeout
    seconds: float = 0.0
    reason: str = ""
    figures: dict = field(default_factory=dict)
    log: str = ""                    # path relative to the out folder
    tail: str = ""                   # last lines of the log (failed / timeout)
    commands: list[str] = field(default_factory=list)
    requested_skip: bool = False     # skipped because --only / --skip said so

    @property
    def bad(self) -> bool:
        return self.status in ("failed", "timeout") or (self.status == "skipped" and not self.requested_skip)


_LIVE: set[subprocess.Popen] = set()
_LIVE_LOCK = threading.Lock()


def _stop(process: subprocess.Popen) -> None:
    """End a process we started, with its children (it leads its own process group): TERM, then KILL."""
    if process.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def stop_all() -> None:
    with _LIVE_LOCK:
        live = list(_LIVE)
    for process in live:
        _stop(process)


def tail_of(path: Path, lines: int = TAIL_LINES, max_chars: int = 4000) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])[-max_chars:]


def run_commands(commands: list[Command], log_path: Path, deadline: float, env: dict[str, str], cwd: Path,
                 parallel: bool = False) -> tuple[str, str]:
    """Run a step's processes, their output in `log_path`, until done or `deadline` (time.monotonic()).
    Returns (status, reason): ('ok', ''), ('failed', 'exit 1 from ...') or ('timeout', ...)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **env}
    with open(log_path, "a", encoding="utf-8") as log:
        groups = [commands] if parallel else [[c] for c in commands]
        for group in groups:
            parts = [log_path.with_name(f"{log_path.stem}.{i}.part") for i in range(len(group))] if parallel \
                else [None]
            processes = []
            try:
                for command, part in zip(group, parts, strict=True):
                    log.write(f"$ {command.display()}\n")
                    log.flush()
                    sink = open(part, "w", encoding="utf-8") if part else log  # noqa: SIM115
                    try:
                        process = subprocess.Popen(command.argv, stdout=sink, stderr=subprocess.STDOUT, cwd=cwd,
                                                   env=full_env, start_new_session=True)
                    except OSError as exc:
                        log.write(f"cannot start: {exc}\n")
                        for _started, process in processes:
                            _stop(process)
                        return "failed", f"cannot start {command.argv[0]}: {exc}"
                    finally:
                        if part:
                            sink.close()
                    with _LIVE_LOCK:
                        _LIVE.add(process)
                    processes.append((command, process))
                timed_out = False
                for _command, process in processes:
                    try:
                        process.wait(timeout=max(deadline - time.monotonic(), 0.0))
                    except subprocess.TimeoutExpired:
                        timed_out = True
                        break
                if timed_out:
                    for _command, process in processes:
                        _stop(process)
            finally:
                for _command, process in processes:
                    with _LIVE_LOCK:
                        _LIVE.discard(process)
                for part in parts:
                    if part and part.is_file():
                        log.write(part.read_text(encoding="utf-8", errors="replace"))
                        part.unlink()
                log.flush()
            if timed_out:
                log.write("\n[gpu_check] stopped at the step's time limit\n")
                return "timeout", "stopped at its time limit"
            failed = [(c, p.returncode) for c, p in processes if p.returncode != 0]
            if failed:
                command, code = failed[0]
                shown = command.display()
                return "failed", f"exit {code} from {shown if len(shown) <= 160 else shown[:157] + '...'}"
    return "ok", ""


def run_step(step: Step, ctx: Context, deadline: float, commands: list[Command] | None = None) -> StepResult:
    """Run one step to completion or its deadline and read its figures."""
    log_path = ctx.logs / f"{step.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text(f"# {step.name}: {step.title}\n", encoding="utf-8")
    commands = step.commands(ctx) if commands is None else commands
    result = StepResult(step.name, "ok", log=str(log_path.relative_to(ctx.out)),
                        commands=[c.display() for c in commands])
    start = time.monotonic()
    for folder in (step.fresh(ctx) if step.fresh else []):
        if folder.exists() and ctx.work in folder.parents:
            shutil.rmtree(folder)
    try:
        result.status, result.reason = run_commands(commands, log_path, deadline, ctx.env(), ROOT, step.parallel)
    except Exception as exc:  # noqa: BLE001 - a broken step must not end the check
        result.status, result.reason = "failed", f"{type(exc).__name__}: {exc}"
    result.seconds = round(time.monotonic() - start, 1)
    if result.status == "ok" and step.figures is not None:
        text = log_path.read_text(encoding="utf-8", errors="replace")
        try:
            result.figures = step.figures(ctx, text)
        except StepCheckFailed as exc:
            result.status, result.reason, result.figures = "failed", str(exc), exc.figures
        except Exception as exc:  # noqa: BLE001 - unreadable figures are reported, the step itself ran
            result.reason = f"figures not read: {type(exc).__name__}: {exc}"
    elif result.status == "failed" and step.figures is not None:  # counts of a failed test run, when readable
        try:
            result.figures = step.figures(ctx, log_path.read_text(encoding="utf-8", errors="replace"))
        except Exception as exc:  # noqa: BLE001
            result.figures = getattr(exc, "figures", {}) or {}
    if result.status in ("failed", "timeout"):
        result.tail = tail_of(log_path)
    return result


@dataclass
class Options:
    out: Path
    work: Path
    data: Path | None
    clip: Path | None
    steps: list[str]
    quick: bool
    budget_s: float
    train_minutes: float
    pack: bool
    subject: Path | None = None


def effective_timeout(step: Step, options: Options) -> float:
    base = step.quick_timeout_s if options.quick else step.timeout_s
    if step.name == "train":  # the budget plus start-up, validation and the final checkpoints
        base = options.train_minutes * 60 + (90 if options.quick else 120)
    return float(base)


@dataclass
class PlanState:
    """What a run has done so far (read by the caller for partial reports and after an interruption)."""

    results: dict[str, StepResult] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)


def run_plan(options: Options, ctx: Context, steps: tuple[Step, ...] | None = None, echo: Callable[[str], None] = print,
             state: PlanState | None = None, on_result: Callable[[PlanState], None] | None = None
             ) -> list[StepResult]:
    """Run the selected steps in plan order within the overall budget; every step gets a result. `on_result` is
    called after each one (the report is rewritten then, so a killed run still leaves one)."""
    steps = STEPS if steps is None else steps
    state = state if state is not None else PlanState()
    results = state.results
    deadline_all = time.monotonic() + options.budget_s
    background: dict[str, tuple[threading.Thread, list]] = {}

    def record(result: StepResult, announce: bool = True) -> None:
        results[result.name] = result
        state.running.discard(result.name)
        if announce:
            _announce(result, echo)
        if on_result is not None:
            on_result(state)

    def wait_for(names) -> None:
        for name in list(names):
            if name in background:
                thread, box = background.pop(name)
                echo(f"[gpu_check] waiting for {name} (background)")
                while thread.is_alive():
                    thread.join(0.5)
                record(box[0] if box else StepResult(name, "failed", reason="its thread ended without a result"))

    for step in steps:
        if step.name not in options.steps:
            why = "a subject was given (--subject)" if step.needs_data == "clip" and ctx.given_subject else \
                "not selected (--only/--skip)"
            record(StepResult(step.name, "skipped", reason=why, requested_skip=True), announce=False)
            continue
        if step.exclusive:
            wait_for(list(background))
        wait_for([n for n in step.needs if n in background])
        broken = [n for n in step.needs if n in results and results[n].status != "ok"
                  and not results[n].requested_skip]
        if broken:
            record(StepResult(step.name, "skipped", reason=f"needs {', '.join(broken)}, which did not pass"))
            continue
        if not ctx.has_input(step):
            record(StepResult(step.name, "failed", reason="no real clip: pass --data DIR (with video/<clip>), "
                                                          "--clip FILE or --subject DIR, or leave the real-clip "
                                                          "steps out with --skip real"))
            continue
        remaining = deadline_all - time.monotonic()
        if remaining < MIN_STEP_S:
            record(StepResult(step.name, "skipped", reason="the overall budget was spent before it started "
                                                           "(--budget-minutes)"))
            continue
        timeout = effective_timeout(step, options)
        deadline = time.monotonic() + min(timeout, remaining)
        echo(f"[gpu_check] {step.name}: {step.title} (limit {min(timeout, remaining):.0f} s)"
             + (" — in the background" if step.background else ""))
        state.running.add(step.name)
        if step.background:
            box: list = []
            thread = threading.Thread(target=lambda s=step, d=deadline, b=box: b.append(run_step(s, ctx, d)),
                                      name=f"gpu_check-{step.name}", daemon=True)
            thread.start()
            background[step.name] = (thread, box)
            continue
        result = run_step(step, ctx, deadline)
        if result.status == "timeout" and timeout > remaining:
            result.reason = "stopped when the overall budget (--budget-minutes) ran out"
        record(result)
    wait_for(list(background))
    return [results[step.name] for step in steps]


def _announce(result: StepResult, echo: Callable[[str], None]) -> None:
    figures = "; ".join(f"{k}: {v}" for k, v in result.figures.items())
    echo(f"[gpu_check] {result.name}: {result.status} in {result.seconds:.1f} s"
         + (f" — {result.reason}" if result.reason else "") + (f" — {figures}" if figures else ""))


# ------------------------------------------------------------------------------------------------- the report

def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_report(results: list[StepResult], out: Path, meta: dict) -> tuple[Path, Path]:
    """report.md (the table, then the log tails of failed / timed-out steps) and report.json."""
    out.mkdir(parents=True, exist_ok=True)
    counts = {status: sum(r.status == status for r in results) for status in STATUSES}
    total = sum(r.seconds for r in results)
    lines = ["# GPU check", ""]
    for key in ("date", "machine", "commit", "python", "budget_minutes", "wall_seconds", "data", "clip", "quick",
                "pending"):
        if meta.get(key) not in (None, ""):
            lines.append(f"- {key.replace('_', ' ')}: {meta[key]}")
    lines += [f"- result: {', '.join(f'{n} {s}' for s, n in counts.items() if n)}; step seconds summed "
              f"{total:.1f} (background steps overlap others)", "",
              "| step | status | seconds | key figures | notes |", "|---|---|---:|---|---|"]
    for r in results:
        figures = "; ".join(f"{k}: {v}" for k, v in r.figures.items())
        lines.append(f"| {r.name} | {r.status} | {r.seconds:.1f} | {_cell(figures)} | {_cell(r.reason)} |")
    for r in results:
        if r.status in ("failed", "timeout"):
            lines += ["", f"## {r.name}: {r.status}", "", r.reason or "", ""]
            if r.commands:
                lines += ["Commands:", "", "```", *r.commands, "```", ""]
            if r.tail:
                lines += [f"Last lines of `{r.log}`:", "", "```", r.tail, "```"]
    md = out / "report.md"
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    payload = {"meta": meta, "counts": counts, "ok": not any(r.bad for r in results),
               "steps": [asdict(r) for r in results]}
    js = out / "report.json"
    js.write_text(json.dumps(payload, indent=1, default=str) + "\n", encoding="utf-8")
    return md, js


def pack_logs(out: Path) -> Path | None:
    """logs/ → logs.tar.gz (PNG sheets moved beside it), so that only a few files come back from a device run."""
    logs = out / "logs"
    if not logs.is_dir():
        return None
    for png in logs.glob("*.png"):
        shutil.move(str(png), out / png.name)
    archive = out / "logs.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(logs, arcname="logs")
    shutil.rmtree(logs)
    return archive


# ------------------------------------------------------------------------------------------------ the command

def cuda_status() -> tuple[bool, str]:
    """(True, 'NVIDIA H100 ..., torch X, CUDA Y') or (False, why not: no torch, a CPU build, no GPU visible)."""
    try:
        import torch
    except ImportError as exc:
        return False, (f"torch cannot be imported by {sys.executable} ({exc}); run scripts/gpu_check.sh, which "
                       "makes the environment")
    if torch.version.cuda is None:
        return False, (f"torch {torch.__version__} in {sys.executable} is a CPU-only build. Make a CUDA "
                       "environment: SYNCTALK_VENV=.venv-gpu scripts/gpu_check.sh (installs PyPI's CUDA build of "
                       "the pinned torch), or set SYNCTALK_PYTHON to a Python with CUDA torch")
    if not torch.cuda.is_available():
        return False, (f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA GPU: "
                       "torch.cuda.is_available() is False (no NVIDIA driver or no visible device; see nvidia-smi "
                       "and CUDA_VISIBLE_DEVICES)")
    return True, f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}"


def find_data(explicit: Path | None) -> Path | None:
    """--data, else $SYNCTALK_TEST_DATA, else ../shared/data, shared/data or gpu_data/ beside the repository."""
    if explicit is not None:
        return explicit.resolve()
    candidates = [Path(os.environ["SYNCTALK_TEST_DATA"])] if os.environ.get("SYNCTALK_TEST_DATA") else []
    candidates += [ROOT.parent / "shared" / "data", ROOT / "shared" / "data", ROOT / "gpu_data"]
    return next((c.resolve() for c in candidates if (c / "video").is_dir()), None)


def find_clip(data: Path | None, clip: str) -> Path | None:
    path = Path(clip)
    if path.is_file():
        return path.resolve()
    for base in ([data / "video", data] if data is not None else []):
        if (base / clip).is_file():
            return (base / clip).resolve()
    return None


def git_commit() -> str:
    # as the benchmarks' own helper, written out here: this script runs before any environment (torch) exists
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (commit + ("+dirty" if dirty else "")) or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/gpu_check.sh", description=__doc__.split("\n\n")[0],
                                     epilog="\n\n".join(__doc__.split("\n\n")[2:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="report folder (default: $OUT when set, else gpu_check_out)")
    parser.add_argument("--work", type=Path, default=Path("gpu_check_work"),
                        help="work folder: the subject, the training workspace (default gpu_check_work)")
    parser.add_argument("--data", type=Path, help="real data folder holding video/<clip> (and models/, audio/)")
    parser.add_argument("--clip", default=DEFAULT_CLIP, help=f"clip under DATA/video, or a video file "
                                                             f"(default {DEFAULT_CLIP})")
    parser.add_argument("--subject", type=Path, help="a subject already preprocessed (`synctalk preprocess`, e.g. "
                                                     "on another machine): train on it, no preprocess step")
    parser.add_argument("--only", action="append", metavar="STEP[,..]", help="run only these steps or groups")
    parser.add_argument("--skip", action="append", metavar="STEP[,..]", help="leave these steps or groups out")
    parser.add_argument("--quick", action="store_true", help="shorter runs (1-minute training, fewer sizes)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the commands; run nothing")
    parser.add_argument("--budget-minutes", type=float, default=8.0,
                        help="wall-clock limit of the whole check (default 8); a step still running then is "
                             "stopped and recorded as a timeout")
    parser.add_argument("--train-minutes", type=float, help="train.budget_minutes of the train step (default 3, "
                                                            "1 with --quick)")
    pack = parser.add_mutually_exclusive_group()
    pack.add_argument("--pack", dest="pack", action="store_true", default=None,
                      help="pack logs/ into logs.tar.gz at the end (default when writing to $OUT)")
    pack.add_argument("--no-pack", dest="pack", action="store_false")
    return parser


def parse_options(argv: list[str] | None = None) -> tuple[Options, argparse.Namespace]:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        steps = select_steps(args.only, args.skip)
    except ValueError as exc:
        parser.error(str(exc))
    if args.subject is not None:
        if not (args.subject / "meta.json").is_file():
            parser.error(f"--subject {args.subject}: not a subject folder (no meta.json; made by synctalk "
                         "preprocess)")
        steps = [name for name in steps if name != "preprocess"]
    if not steps:
        parser.error("--only/--skip leave no step to run")
    if args.budget_minutes <= 0:
        parser.error("--budget-minutes must be positive")
    train_minutes = args.train_minutes if args.train_minutes is not None else (1.0 if args.quick else 3.0)
    if train_minutes <= 0:
        parser.error("--train-minutes must be positive")
    if args.data is not None and not args.data.is_dir():
        parser.error(f"--data {args.data}: not a folder")
    out_from_env = args.out is None and bool(os.environ.get("OUT"))
    out = (args.out or Path(os.environ.get("OUT") or "gpu_check_out")).resolve()
    data = find_data(args.data)
    options = Options(out=out, work=args.work.resolve(), data=data, clip=find_clip(data, args.clip), steps=steps,
                      quick=args.quick, budget_s=60.0 * args.budget_minutes, train_minutes=train_minutes,
                      pack=out_from_env if args.pack is None else args.pack,
                      subject=args.subject.resolve() if args.subject is not None else None)
    return options, args


def make_context(options: Options, python: str | None = None) -> Context:
    return Context(python=python or sys.executable, out=options.out, work=options.work, data=options.data,
                   clip=options.clip, quick=options.quick, train_minutes=options.train_minutes,
                   given_subject=options.subject)


def format_plan(options: Options, ctx: Context) -> str:
    """The dry-run text: folders, data, then each step with its limit and its commands."""
    lines = [f"GPU check plan (dry run: nothing is run). Budget {options.budget_s / 60:g} min"
             f"{', quick' if options.quick else ''}; python {ctx.python}",
             f"  out  {options.out}{' (packed into logs.tar.gz at the end)' if options.pack else ''}",
             f"  work {options.work}",
             f"  data {options.data or 'NOT FOUND (pass --data DIR; the real-clip steps fail without it)'}",
             f"  clip {options.clip or 'NOT FOUND'}" + (f"; subject {options.subject} (no preprocess)"
                                                          if options.subject else ""),
             "  env  " + " ".join(f"{k}={v}" for k, v in ctx.env().items()), ""]
    limits = 0.0
    for index, step in enumerate(STEPS, 1):
        if step.name not in options.steps:
            lines.append(f"{index:2d}. {step.name:<17} skipped (--only/--skip)")
            continue
        timeout = effective_timeout(step, options)
        limits += 0 if step.background else timeout
        flags = [f for f, on in (("background", step.background), ("after background work", step.exclusive),
                                 ("side by side", step.parallel)) if on]
        lines.append(f"{index:2d}. {step.name:<17} limit {timeout:4.0f} s  {step.title}"
                     + (f" [{', '.join(flags)}]" if flags else ""))
        if not ctx.has_input(step):
            lines.append("      ! no real clip: this step will fail")
        for folder in (step.fresh(ctx) if step.fresh else []):
            lines.append(f"      rm -rf {folder}")
        for command in step.commands(ctx):
            lines.append(f"      $ {command.display()}")
    lines += ["", f"Step limits (background steps not counted) add up to {limits / 60:.1f} min; the whole check "
                  f"stops at {options.budget_s / 60:g} min."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    options, args = parse_options(argv)
    ctx = make_context(options)
    if args.dry_run:
        print(format_plan(options, ctx))
        return 0
    ok, detail = cuda_status()
    if not ok:
        print(f"gpu_check: refusing to run: {detail}. (--dry-run shows the plan without a GPU.)", file=sys.stderr)
        return 2
    print(f"[gpu_check] {detail}; out {options.out}; work {options.work}; data {options.data}; "
          f"budget {options.budget_s / 60:g} min", flush=True)
    options.out.mkdir(parents=True, exist_ok=True)
    options.work.mkdir(parents=True, exist_ok=True)
    ctx.logs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "machine": detail,
            "commit": git_commit(), "python": sys.executable, "budget_minutes": options.budget_s / 60,
            "data": str(options.data) if options.data else None, "clip": str(options.clip) if options.clip else None,
            "quick": options.quick, "steps": options.steps, "work": str(options.work)}
    state = PlanState()

    def partial_report(state: PlanState) -> None:
        done = [state.results[n] for n in STEP_NAMES if n in state.results]
        pending = [n for n in options.steps if n not in state.results]
        write_report(done, options.out, {**meta, "wall_seconds": round(time.monotonic() - started, 1),
                                         "pending": ", ".join(pending) + " (report written while running)"})

    def terminate(signum, frame):  # the device tool or a scheduler stopping us: leave a report all the same
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    code = None
    try:
        results = run_plan(options, ctx, echo=lambda line: print(line, flush=True), state=state,
                           on_result=partial_report)
    except KeyboardInterrupt:
        stop_all()
        print("[gpu_check] interrupted; the processes it started were stopped", file=sys.stderr)
        for name in STEP_NAMES:
            if name in state.running:
                state.results[name] = StepResult(name, "failed", reason="interrupted while running (the check "
                                                 "was stopped)", log=f"logs/{name}.log",
                                                 tail=tail_of(ctx.logs / f"{name}.log"))
            elif name not in state.results:
                state.results[name] = StepResult(name, "skipped", reason="not reached: the check was stopped")
        results = [state.results[name] for name in STEP_NAMES]
        code = 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    meta["wall_seconds"] = round(time.monotonic() - started, 1)
    md, _ = write_report(results, options.out, meta)
    if options.pack:
        pack_logs(options.out)
    bad = [r.name for r in results if r.bad]
    print(f"[gpu_check] {'all steps ok' if not bad else 'not ok: ' + ', '.join(bad)} in {meta['wall_seconds']} s; "
          f"report: {md}", flush=True)
    return code if code is not None else (1 if bad else 0)


if __name__ == "__main__":
    sys.exit(main())
