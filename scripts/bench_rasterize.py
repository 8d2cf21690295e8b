"""Gaussian splatting rasterizer speed on the CPU: the C++ tile rasterizer (forward, forward + backward) over
head-like scenes, with the dense PyTorch reference as the baseline where it fits in memory.

    python scripts/bench_rasterize.py                          # 10k / 30k / 60k Gaussians at 256 and 512 px
    python scripts/bench_rasterize.py --counts 30000 --sizes 256 --repeats 10

A scene: Gaussians filling an ellipsoid the size of a head (world units of docs/dataset.md) seen from 4.5 units,
scales 0.01–0.04 units, opacities 0.3–1, so that most pixels of the face see tens of overlapping Gaussians, as a
trained head does. The projection (PyTorch) is timed with the rasterization. Run it alone: two timed runs side by
side make each other slow.
"""

from __future__ import annotations

import argparse
import time

import torch

from cuda_ext.rasterize import ops
from cuda_ext.rasterize import reference as ref


def head_scene(n: int, size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    radius = torch.rand(n, 1, generator=g) ** (1 / 3)
    means = direction * radius * torch.tensor([0.8, 1.1, 0.9])
    quats = torch.randn(n, 4, generator=g)
    scales = 0.01 + 0.03 * torch.rand(n, 3, generator=g)
    opacities = 0.3 + 0.7 * torch.rand(n, generator=g)
    colors = torch.rand(n, 3, generator=g)
    viewmat = torch.eye(4)
    viewmat[2, 3] = 4.5
    K = torch.tensor([[1.6 * size, 0, size / 2], [0, 1.6 * size, size / 2], [0, 0, 1]])
    return means, quats, scales, opacities, colors, viewmat, K


def time_it(fn, repeats: int) -> float:
    fn()  # warm-up (and the first build)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def measure(n: int, size: int, backend: str, repeats: int) -> tuple[float, float, float]:
    means, quats, scales, opacities, colors, viewmat, K = head_scene(n, size)
    params = [t.requires_grad_(True) for t in (means, quats, scales, opacities, colors)]
    background = torch.ones(3)

    def forward():
        with torch.no_grad():
            p = ref.project(params[0], ref.covariance(params[1], params[2]), viewmat, K, size, size)
            return ops.rasterize(p, params[4], params[3], size, size, background, backend=backend)

    def step():
        p = ref.project(params[0], ref.covariance(params[1], params[2]), viewmat, K, size, size)
        image, _ = ops.rasterize(p, params[4], params[3], size, size, background, backend=backend)
        image.mean().backward()

    coverage = float((forward()[1] > 0.5).float().mean())
    return time_it(forward, repeats), time_it(step, max(1, repeats // 2)), coverage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[10000, 30000, 60000])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = []
    baseline = measure(1000, 64, "torch", 2)
    rows.append(("torch (dense reference)", 1000, 64, *baseline))
    rows.append(("cpu (tiles)", 1000, 64, *measure(1000, 64, "cpu", args.repeats)))
    for size in args.sizes:
        for n in args.counts:
            rows.append(("cpu (tiles)", n, size, *measure(n, size, "cpu", args.repeats)))
    print("| backend | Gaussians | size | forward ms | frames/s | forward + backward ms | covered |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for backend, n, size, forward, step, coverage in rows:
        print(f"| {backend} | {n} | {size} | {1000 * forward:.1f} | {1 / forward:.1f} | {1000 * step:.1f} | "
              f"{coverage:.0%} |")


if __name__ == "__main__":
    main()
