"""Head-stage training step time on the CPU: two source trees side by side, and under a competing busy process.

    python scripts/bench_train_step.py                                   # this tree, idle vs one busy competitor
    python scripts/bench_train_step.py --trees /tmp/base . --steps 150   # before/after a change (git worktree)
    python scripts/bench_train_step.py --subject runs/macron             # a real preprocessed subject

Each measurement is a fresh process that trains ``--steps`` head steps of the NeRF head (recipe ``nerf_cpu``;
``cpu`` in trees older than the Gaussian head) with ``synctalk.train.trainer.train(..., stages=("head",))`` and
reads the stage's step time from ``train_log.json`` (optimiser steps only; validation and start-up are not
counted). The synthetic subject (default) has random 256 x 256 frames and label maps: it exercises every part
of a step, not the quality.

``--ops`` (this tree only) profiles steady head steps in-process and counts, per step, the ATen operators (each
one a kernel launch on a GPU) and those that make the host wait for the device (``.item()``, ``nonzero``,
``unique``...): what bounds the step on a GPU once the data path serves device tensors.

``--contention`` runs every configuration twice: on an idle machine and beside one process spinning on a core (a
user's laptop is never idle). Environments compared there: ``torch default`` (OpenMP threads spin-wait at
barriers; ``OMP_WAIT_POLICY`` unset and our runtime's thread policy switched off) and ``synctalk`` (what
``synctalk.runtime.configure_threads`` chooses). Run it alone: two timed runs side by side make each other slow.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WORKER = r"""
import json, sys, time
from pathlib import Path
import synctalk
import synctalk.runtime
if hasattr(synctalk.runtime, "configure_threads"):  # what the CLI does first (absent in older trees)
    synctalk.runtime.configure_threads()
from synctalk.config import SyncTalkConfig, load_config
from synctalk.train.trainer import train
subject, workspace, steps, device = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
overrides = [f"train.head_steps={steps}", "train.eval_every=1000000", "train.checkpoint_every=1000000",
             "train.eval_frames=1", "train.budget_minutes=0"]
# the NeRF head's cpu recipe (trees from before the Gaussian head call it cpu.yaml)
recipe = "nerf_cpu" if (Path(synctalk.__file__).parents[1] / "configs" / "nerf_cpu.yaml").is_file() else "cpu"
cfg = load_config(SyncTalkConfig, recipe, overrides)
t0 = time.perf_counter()
if device == "cuda" and hasattr(synctalk.runtime, "configure_precision"):
    synctalk.runtime.configure_precision(device, cfg.train.tf32)
train(subject, workspace, cfg, device=device, progress=False, stages=("head",))
head = json.loads((workspace / "train_log.json").read_text())["stages"]["head"]
import torch
print(json.dumps({"seconds": head["seconds"], "steps": head["step"], "wall": time.perf_counter() - t0,
                  "threads": torch.get_num_threads(), "source": synctalk.__file__}))
"""


def make_subject(root: Path, size: int, n_frames: int) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import build_subject  # the test suite's complete synthetic subject

    return build_subject(root, n_frames=n_frames, size=(size, size))


def measure(tree: Path, subject: Path, steps: int, env: dict[str, str], label: str, device: str = "cpu") -> dict:
    workspace = Path(tempfile.mkdtemp(prefix="bench_step_"))
    run_env = {**os.environ, **env, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", WORKER, str(subject), str(workspace), str(steps), device], env=run_env,
                         capture_output=True, text=True, cwd=tree)
    if out.returncode != 0:
        raise SystemExit(f"{label}: the worker failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not result["source"].startswith(str(tree.resolve())):
        raise SystemExit(f"{label}: imported synctalk from {result['source']}, not from {tree}")
    result["s_per_step"] = result["seconds"] / max(result["steps"], 1)
    return result


HOST_SYNCS = ("aten::_local_scalar_dense", "aten::nonzero", "aten::_unique2", "aten::unique_dim",
              "aten::unique_consecutive", "aten::masked_select", "aten::repeat_interleave", "aten::_assert_async")


def count_ops(subject: Path, steps: int, device: str = "cpu") -> None:
    """ATen operators and host-syncing operators per steady head step (see the module docstring); on CUDA also
    the synchronisations torch itself reports (``torch.cuda.set_sync_debug_mode``)."""
    import warnings

    import torch
    from torch.profiler import ProfilerActivity, profile

    from synctalk.config import SyncTalkConfig, load_config
    from synctalk.train.loop import LoopConfig, StepLoop
    from synctalk.train.stages import HeadStage
    from synctalk.train.trainer import Trainer

    cfg = load_config(SyncTalkConfig, "nerf_cpu")
    trainer = Trainer(subject, Path(tempfile.mkdtemp(prefix="bench_ops_")), cfg, device=device, progress=False)
    stage = HeadStage(trainer.context)
    sampler = stage.sampler()
    optimizer, scheduler = stage.optimizer()
    warm = 20
    loop = StepLoop("head", trainer.head, optimizer, scheduler,
                    LoopConfig(steps=warm, ema_decay=cfg.train.ema_decay, log_every=10**9), progress=False)

    def step_fn(step: int):
        return stage.losses(sampler.sample(), step)

    loop.run(step_fn, after_step=stage.after_step)  # past the grid's warm-up refreshes
    loop.config.steps = warm + steps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        loop.run(step_fn, after_step=stage.after_step)
    if device == "cuda":
        loop.config.steps += steps
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t0 = time.perf_counter()
            loop.run(step_fn, after_step=stage.after_step)
            torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
        torch.cuda.set_sync_debug_mode(0)
        reported = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message)]
        print(f"cuda: {steps / seconds:.1f} head steps/s; synchronisations torch reports: "
              f"{len(reported) / steps:.2f} per step" + (f" (first: {reported[0]})" if reported else ""))
    counts: dict[str, int] = {}
    for event in prof.events():
        if event.name.startswith("aten::"):
            counts[event.name] = counts.get(event.name, 0) + 1
    total = sum(counts.values())
    syncs = {name: counts[name] for name in HOST_SYNCS if name in counts}
    print(f"{steps} steady head steps (nerf_cpu recipe, {cfg.train.rays} rays): {total / steps:.0f} ATen ops per step "
          f"(nested calls included); host syncs per step: "
          + (", ".join(f"{name} {n / steps:.2f}" for name, n in syncs.items()) or "none"))
    top = sorted(counts.items(), key=lambda item: -item[1])[:12]
    print("most frequent: " + ", ".join(f"{name} {n / steps:.0f}" for name, n in top))


def spin() -> subprocess.Popen:
    """One process keeping one core busy (pure Python, no threads)."""
    return subprocess.Popen([sys.executable, "-c", "while True:\n    pass"])


ENVIRONMENTS = {
    "torch default": {"SYNCTALK_THREADS": "off"},
    "synctalk": {},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trees", nargs="+", type=Path, default=[REPO], help="source trees to compare")
    parser.add_argument("--subject", type=Path, help="a preprocessed subject (default: a synthetic one)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--size", type=int, default=256, help="side of the synthetic subject")
    parser.add_argument("--contention", action="store_true", help="also measure beside one busy process")
    parser.add_argument("--ops", action="store_true", help="count operators and host syncs per step (this tree)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the steps run")
    args = parser.parse_args()

    subject = args.subject or make_subject(Path(tempfile.mkdtemp(prefix="bench_subject_")) / "s", args.size, 40)
    if args.ops:
        count_ops(subject, args.steps, args.device)
        return
    print(f"subject {subject}, {args.steps} head steps per run, NeRF cpu recipe on {args.device}, "
          f"{os.cpu_count()} cores")
    rows = []
    for tree in args.trees:
        environments = ENVIRONMENTS if args.contention else {"synctalk": {}}
        for name, env in environments.items():
            idle = measure(tree, subject, args.steps, env, f"{tree} {name}", args.device)
            row = {"tree": str(tree), "environment": name, "threads": idle["threads"], "idle": idle["s_per_step"]}
            if args.contention:
                competitor = spin()
                try:
                    time.sleep(1.0)
                    busy = measure(tree, subject, args.steps, env, f"{tree} {name} busy", args.device)
                finally:
                    competitor.kill()
                    competitor.wait()
                row["busy"] = busy["s_per_step"]
            rows.append(row)
            print(json.dumps(row))
    print()
    header = "| tree | environment | threads | idle s/step |" + (" busy s/step | busy / idle |" if args.contention
                                                                     else "")
    print(header)
    print("|---|---|---:|---:|" + ("---:|---:|" if args.contention else ""))
    for row in rows:
        line = f"| {row['tree']} | {row['environment']} | {row['threads']} | {row['idle']:.3f} |"
        if args.contention:
            line += f" {row['busy']:.3f} | {row['busy'] / row['idle']:.2f}x |"
        print(line)


if __name__ == "__main__":
    main()
