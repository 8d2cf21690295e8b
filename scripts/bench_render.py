#!/usr/bin/env python
"""Render-core throughput: rays/s for march + composite (forward + backward) per backend and batch size.

    python scripts/bench_render.py                                  # CUDA if present, else a small CPU run
    python scripts/bench_render.py --rays 4096 16384 65536 --resolution 128 --json out.json
    python scripts/bench_render.py --device cpu --rays 1024 4096 --resolution 64 --repeats 5

Scene: a 128^3 occupancy grid over [-1, 1]^3 whose occupied cells form a sphere of radius 0.5; rays from a pinhole
camera at distance 3 looking at the centre, pixels drawn at random (fixed seed) from a 512 x 512 image. The field is
replaced by precomputed per-sample densities/colours (it is not what is measured).

Per row: milliseconds (median over ``--repeats`` after ``--warmup`` runs, with min-max spread) for marching,
compositing forward, compositing forward + backward, and the whole step (march + composite fwd + bwd) as rays/s.
``GB/s`` is the compulsory-traffic bandwidth: the bytes a perfect kernel must move (each input read once, each
output written once; model in ``traffic_bytes``) divided by the measured time. On a GPU compare it with the
device's peak (H100 SXM ~3.3 TB/s); on CPU it shows how far the reference is from memory bound.
Backends: torch (reference), nerfacc (its compositing; its marcher is CUDA-only so on CPU the march column uses
torch), cuda (our kernels, when built).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cuda_ext.build import load as load_extension  # noqa: E402
from cuda_ext.composite import ops as composite_ops  # noqa: E402
from cuda_ext.march import ops as march_ops  # noqa: E402
from synctalk.render.occupancy import OccupancyGrid  # noqa: E402
from synctalk.render.rays import generate_rays, ray_aabb_intersect  # noqa: E402


def metadata(device: torch.device) -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "cuda_ext", "synctalk/render"], cwd=REPO,
                           capture_output=True, text=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or
                                                                              platform.machine())
    return {"commit": (commit.stdout.strip() or "unknown") + ("+dirty" if dirty.stdout.strip() else ""),
            "torch": torch.__version__, "cuda": torch.version.cuda, "device": f"{device.type}: {name}",
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M")}


def sphere_grid(resolution: int, device: torch.device, radius: float = 0.5) -> OccupancyGrid:
    grid = OccupancyGrid(torch.tensor([-1.0, -1, -1, 1, 1, 1]), resolution=resolution).to(device)
    grid.binary.copy_((torch.linalg.norm(grid.cell_centers(), dim=-1) < radius).reshape(grid.resolution))
    return grid


def camera_rays(n_rays: int, device: torch.device, size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    pixels = torch.stack([torch.randint(0, size, (n_rays,), generator=gen),
                          torch.randint(0, size, (n_rays,), generator=gen)], -1).float()
    c2w = torch.eye(4)
    c2w[2, 3] = -3.0  # at z = -3 looking along +z (OpenCV: camera z forward)
    focal = size / (2 * math.tan(math.radians(15)))  # 30 degree field of view: the box fills most of the image
    K = torch.tensor([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1]])
    rays_o, rays_d = generate_rays(c2w, K, pixels=pixels)
    return rays_o.to(device), rays_d.to(device)


def traffic_bytes(n_rays: int, n_samples: int) -> dict[str, int]:
    """Compulsory bytes (float32, int64 indices) per stage.

    march: read o, d, near, far (32 B/ray) in each of its 2 passes + 8 B/ray counts; write ray index, t_start,
    t_end (16 B/sample). Grid reads are left out (2 MB at 128^3, cache resident).
    composite forward: read info (16 B/ray), t_start, t_end, sigma, rgb (24 B/sample); write weight, trans
    (8 B/sample), opacity, depth, rgb (20 B/ray).
    composite backward: read the forward inputs + weight, trans + their gradients (40 B/sample) and the per-ray
    gradients (20 B/ray + info 16 B); write gradients of t_start, t_end, sigma, rgb (24 B/sample).
    """
    march = n_rays * (2 * 32 + 8) + n_samples * 16
    forward = n_rays * (16 + 20) + n_samples * (24 + 8)
    backward = n_rays * (20 + 16) + n_samples * (40 + 24)
    return {"march": march, "forward": forward, "backward": backward, "step": march + forward + backward}


def timed(fn, device: torch.device, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # inside the timed region: kernels are asynchronous
        times.append(time.perf_counter() - start)
    return times


def bench_case(backend: str, n_rays: int, grid: OccupancyGrid, step_size: float, device: torch.device,
               warmup: int, repeats: int) -> dict:
    rays_o, rays_d = camera_rays(n_rays, device)
    near, far, _ = ray_aabb_intersect(rays_o, rays_d, grid.aabb)
    march_backend = backend if (backend != "nerfacc" or device.type == "cuda") else "torch"

    def march():
        return march_ops.march(rays_o, rays_d, near, far, grid.binary, grid.aabb, step_size, max_steps=1024,
                               backend=march_backend)

    ray_indices, t_starts, t_ends = march()
    n_samples = int(ray_indices.numel())
    gen = torch.Generator(device=device).manual_seed(1)
    sigmas = (torch.rand(n_samples, generator=gen, device=device) * 50).requires_grad_(True)
    rgbs = torch.rand(n_samples, 3, generator=gen, device=device).requires_grad_(True)

    def forward():
        return composite_ops.composite(ray_indices, t_starts, t_ends, sigmas, rgbs, n_rays, backend=backend)

    def forward_backward():
        out = forward()
        (out.colors.sum() + out.depths.sum()).backward()

    def step():
        march()
        forward_backward()

    stats = {}
    for name, fn in (("march", march), ("forward", forward), ("fwd_bwd", forward_backward), ("step", step)):
        times = timed(fn, device, warmup, repeats)
        stats[name] = {"median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times),
                       "max_ms": 1e3 * max(times)}
    traffic = traffic_bytes(n_rays, n_samples)
    step_s = stats["step"]["median_ms"] / 1e3
    return {"backend": backend, "march_backend": march_backend, "rays": n_rays, "samples": n_samples,
            "samples_per_ray": n_samples / n_rays, "times": stats, "rays_per_s": n_rays / step_s,
            "traffic_bytes": traffic, "step_gb_per_s": traffic["step"] / step_s / 1e9,
            "fwd_gb_per_s": traffic["forward"] / (stats["forward"]["median_ms"] / 1e3) / 1e9}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rays", type=int, nargs="+", help="batch sizes (default 4096 16384 65536 on CUDA, "
                                                            "1024 4096 on CPU)")
    parser.add_argument("--resolution", type=int, help="grid cells per axis (default 128 on CUDA, 64 on CPU)")
    parser.add_argument("--step-size", type=float, default=2 * math.sqrt(3) / 512,
                        help="march step in world units (default: box diagonal / 512)")
    parser.add_argument("--backends", nargs="+", default=["torch", "nerfacc", "cuda"])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    on_gpu = device.type == "cuda"
    rays = args.rays or ([4096, 16384, 65536] if on_gpu else [1024, 4096])
    resolution = args.resolution or (128 if on_gpu else 64)
    torch.manual_seed(0)
    grid = sphere_grid(resolution, device)
    backends = []
    for backend in args.backends:
        if backend == "cuda":
            module, reason = load_extension("composite", "cuda") if on_gpu else (None, "not a CUDA device")
            march_module, march_reason = load_extension("march", "cuda") if on_gpu else (None, "not a CUDA device")
            if module is None or march_module is None:
                print(f"skipping backend cuda: {reason if module is None else march_reason}")
                continue
        backends.append(backend)
    results = {"meta": metadata(device), "resolution": resolution, "step_size": args.step_size,
               "occupied_fraction": grid.occupancy_fraction(), "warmup": args.warmup, "repeats": args.repeats,
               "cases": [bench_case(b, n, grid, args.step_size, device, args.warmup, args.repeats)
                         for b in backends for n in rays]}
    meta = results["meta"]
    print(f"render core: {meta['device']}, torch {meta['torch']}, {meta['threads']} threads, commit {meta['commit']}, "
          f"{meta['date']}; grid {resolution}^3 sphere ({100 * results['occupied_fraction']:.1f}% occupied), "
          f"step {args.step_size:.4g}; median of {args.repeats} (min-max)")
    print("| backend | rays | samples/ray | march ms | composite fwd ms | fwd+bwd ms | step ms | rays/s | "
          "fwd GB/s | step GB/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for case in results["cases"]:
        cell = lambda k, t=case["times"]: f"{t[k]['median_ms']:.2f} ({t[k]['min_ms']:.2f}-{t[k]['max_ms']:.2f})"  # noqa: E731
        label = case["backend"] + (f" (march {case['march_backend']})" if case["march_backend"] != case["backend"]
                                   else "")
        print(f"| {label} | {case['rays']} | {case['samples_per_ray']:.1f} | {cell('march')} | {cell('forward')} | "
              f"{cell('fwd_bwd')} | {cell('step')} | {case['rays_per_s']:.3g} | {case['fwd_gb_per_s']:.3g} | "
              f"{case['step_gb_per_s']:.3g} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
