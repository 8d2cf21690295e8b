"""Throughput of the hash-grid encodings: points/s for forward + backward, per backend and batch size.

    python scripts/bench_encoding.py                        # table on stdout
    python scripts/bench_encoding.py --json bench.json      # and the rows + metadata as JSON ('-' for stdout)
    python scripts/bench_encoding.py --encodings hashgrid --backends cpu --sizes 65536 --repeats 10

Each case: default layout (trihash 12 x 1 levels 64→512, 2^14 rows; hashgrid 16 x 2 levels 16→2048, 2^19 rows),
fixed seeds, `--warmup` untimed runs, then `--repeats` timed runs of forward + backward (upstream gradient of
ones, table gradient only, as in training) with a device sync inside the timed region; reported: median time, the
min–max spread, and points/s at the median. The PyTorch reference is slow on CPU, so it runs only up to
`--torch-max-points` (default 65536) there. Builds happen before timing (first build takes a minute or two).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cuda_ext.build import load  # noqa: E402
from cuda_ext.hashgrid import ops as hashgrid_ops  # noqa: E402
from cuda_ext.hashgrid.reference import level_layout  # noqa: E402
from cuda_ext.trihash import ops as trihash_ops  # noqa: E402

ENCODINGS = {
    # name: (layout, table shape from total rows, encode function)
    "trihash": (level_layout(12, 64, 512, log2_table_size=14, dim=2), lambda rows: (3, rows, 1),
                trihash_ops.trihash_encode),
    "hashgrid": (level_layout(16, 16, 2048, log2_table_size=19, dim=3), lambda rows: (rows, 2),
                 hashgrid_ops.hashgrid_encode),
}


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (commit + ("+dirty" if dirty else "")) or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bench_case(name: str, backend: str, num_points: int, warmup: int, repeats: int) -> dict:
    (resolutions, offsets), table_shape, encode = ENCODINGS[name]
    device = "cuda" if backend == "cuda" else "cpu"
    gen = torch.Generator().manual_seed(0)
    points = (torch.rand(num_points, 3, generator=gen) * 2 - 1).to(device)
    table = (torch.rand(table_shape(offsets[-1]), generator=gen) * 2e-4 - 1e-4).to(device).requires_grad_(True)
    times = []
    for i in range(warmup + repeats):
        table.grad = None
        sync(device)
        start = time.perf_counter()
        out = encode(points, table, offsets, resolutions, 1.0, backend=backend)
        out.backward(torch.ones_like(out))
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"encoding": name, "backend": backend, "points": num_points, "median_s": median, "min_s": min(times),
            "max_s": max(times), "points_per_s": num_points / median, "repeats": repeats}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encodings", nargs="+", default=list(ENCODINGS), choices=list(ENCODINGS))
    parser.add_argument("--backends", nargs="+", default=["torch", "cpu", "cuda"], choices=["torch", "cpu", "cuda"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[16384, 65536, 262144])
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--torch-max-points", type=int, default=65536,
                        help="largest batch for the PyTorch reference on CPU (it is slow); 0: no limit")
    parser.add_argument("--json", default=None, help="write rows + metadata as JSON to this path ('-': stdout)")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    builds, rows = {}, []
    for name in args.encodings:
        for backend in args.backends:
            if backend in ("cpu", "cuda"):
                module, status = load(name, backend)
                builds[f"{name}/{backend}"] = status
                if module is None:
                    print(f"skip {name} {backend}: {status}", file=sys.stderr)
                    continue
            for size in args.sizes:
                if backend == "torch" and args.torch_max_points and size > args.torch_max_points:
                    continue
                rows.append(bench_case(name, backend, size, args.warmup, args.repeats))

    devices = {"cpu": device_name("cpu")}
    if "cuda" in args.backends and torch.cuda.is_available():
        devices["cuda"] = device_name("cuda")
    meta = {"torch": torch.__version__, "cuda": torch.version.cuda, "threads": torch.get_num_threads(),
            "devices": devices, "commit": git_commit(), "python": platform.python_version(), "builds": builds,
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "timed": "forward + backward (table gradient), median of repeats after warmup"}
    print(f"torch {meta['torch']} (CUDA {meta['cuda']}), {meta['threads']} threads, commit {meta['commit']}")
    for device, desc in devices.items():
        print(f"{device}: {desc}")
    header = ("encoding", "backend", "points", "median ms", "min–max ms", "Mpoints/s")
    table = [(r["encoding"], r["backend"], f"{r['points']:,}", f"{r['median_s'] * 1e3:.1f}",
              f"{r['min_s'] * 1e3:.1f}–{r['max_s'] * 1e3:.1f}", f"{r['points_per_s'] / 1e6:.3f}") for r in rows]
    widths = [max(len(str(row[i])) for row in [header, *table]) for i in range(len(header))]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in table:
        print("  ".join(c.rjust(w) if i >= 2 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                          strict=True))))
    if args.json:
        payload = json.dumps({"meta": meta, "rows": rows}, indent=1)
        if args.json == "-":
            print(payload)
        else:
            Path(args.json).write_text(payload + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
