"""Input encodings of the fields: tri-plane hash grid, 3D hash grid, frequency (positional) and spherical harmonics.

Every encoding is an nn.Module with `output_dim` and `forward(inputs [N, D]) -> [N, output_dim]`. The two hash grids
run on one backend switch:

    "auto"   fastest available for the tensors' device: CUDA kernels on GPU, the C++/OpenMP path on CPU, else the
             PyTorch reference (cuda_ext/<op>/ops.py logs the choice once, e.g. "trihash backend: cpu (cached)")
    "torch"  the PyTorch reference (any device, also gives gradients w.r.t. the points)
    "cpu" / "cuda"   that fast path (an error saying why when it cannot be built here)
    "tcnn"   tiny-cuda-nn's fused encodings, only when `tinycudann` imports; its tables are its own (different
             hash layout), so checkpoints do not move between tcnn and the other backends

Tables are float32 and initialised uniform(-1e-4, 1e-4) (Instant-NGP): near-zero codes at the start of training.
Frequency and SH encodings are cheap elementwise maths and stay pure PyTorch.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cuda_ext.hashgrid import ops as hashgrid_ops
from cuda_ext.hashgrid.reference import level_layout
from cuda_ext.trihash import ops as trihash_ops
from synctalk.errors import ConfigError

GRID_BACKENDS = ("auto", "torch", "cpu", "cuda", "tcnn")
INIT_SCALE = 1e-4


def _check_backend(backend: str) -> None:
    if backend not in GRID_BACKENDS:
        raise ConfigError(f"unknown encoding backend '{backend}'; use one of {', '.join(GRID_BACKENDS)}")


def _import_tcnn():
    """tinycudann, or a ConfigError saying how to get it (it is not on PyPI)."""
    try:
        import tinycudann
    except Exception as exc:  # ImportError, or its CUDA runtime failing to load
        raise ConfigError(f"encoding backend 'tcnn' needs tiny-cuda-nn, which does not import here ({exc}); "
                          "install it with pip install \"git+https://github.com/NVlabs/tiny-cuda-nn/"
                          "#subdirectory=bindings/torch\" or use backend 'auto'") from exc
    return tinycudann


class TriPlaneHashEncoding(nn.Module):
    """Tri-plane multiresolution 2D hash grid (SyncTalk's face-region encoding).

    The point is projected onto the xy, yz and xz planes; each plane is a 2D multiresolution grid (dense while a
    level fits its table, hashed above) sampled bilinearly. Default: 12 levels x 1 feature from 64 to 512 cells,
    2^14 rows per level → a 36-d code. Spec: cuda_ext/trihash/reference.py.

    Args:
        num_levels: L. features_per_level: F. base_resolution / finest_resolution: cells per axis of the coarsest
            and finest level (geometric growth). log2_table_size: rows per hashed level. bound: points in
            [-bound, bound]^3 (outside points are clamped onto the box). backend: see the module docstring.

    Shapes: forward(points [N, 3]) -> [N, 3 * L * F], xy | yz | xz blocks.
    """

    def __init__(self, num_levels: int = 12, features_per_level: int = 1, base_resolution: int = 64,
                 finest_resolution: int = 512, log2_table_size: int = 14, bound: float = 1.0,
                 backend: str = "auto"):
        super().__init__()
        _check_backend(backend)
        self.backend = backend
        self.bound = float(bound)
        self.num_levels, self.features_per_level = num_levels, features_per_level
        self.resolutions, self.offsets = level_layout(num_levels, base_resolution, finest_resolution,
                                                      log2_table_size=log2_table_size, dim=2)
        self.output_dim = 3 * num_levels * features_per_level
        if backend == "tcnn":
            tcnn = _import_tcnn()
            config = _tcnn_grid_config(num_levels, features_per_level, log2_table_size, base_resolution,
                                       finest_resolution)
            self.tcnn_planes = nn.ModuleList([tcnn.Encoding(2, config, dtype=torch.float32) for _ in range(3)])
        else:
            # [3 planes, sum of level sizes, F]
            self.embeddings = nn.Parameter(torch.empty(3, self.offsets[-1], features_per_level)
                                           .uniform_(-INIT_SCALE, INIT_SCALE))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """points [N, 3] in [-bound, bound]^3 → [N, output_dim]."""
        if self.backend == "tcnn":
            units = ((points + self.bound) / (2 * self.bound)).clamp(0, 1)
            return torch.cat([plane(units[:, list(axes)]).float()
                              for plane, axes in zip(self.tcnn_planes, ((0, 1), (1, 2), (0, 2)), strict=True)], -1)
        return trihash_ops.trihash_encode(points, self.embeddings, self.offsets, self.resolutions, self.bound,
                                          backend=self.backend)

    def extra_repr(self) -> str:
        return (f"levels={self.num_levels}, features={self.features_per_level}, resolutions={self.resolutions[0]}"
                f"..{self.resolutions[-1]}, rows={self.offsets[-1]}, bound={self.bound}, backend={self.backend}")


class HashGridEncoding(nn.Module):
    """3D multiresolution hash grid (Instant-NGP) with trilinear interpolation.

    Default: 16 levels x 2 features from 16 to 2048 cells, 2^19 rows per level → a 32-d code. Pass
    `per_level_scale` to grow by a fixed factor instead (it then overrides finest_resolution). Hash primes 1,
    2654435761, 805459861; spec: cuda_ext/hashgrid/reference.py.

    Shapes: forward(points [N, 3]) -> [N, L * F].
    """

    def __init__(self, num_levels: int = 16, features_per_level: int = 2, base_resolution: int = 16,
                 finest_resolution: int | None = 2048, per_level_scale: float | None = None,
                 log2_table_size: int = 19, bound: float = 1.0, backend: str = "auto"):
        super().__init__()
        _check_backend(backend)
        self.backend = backend
        self.bound = float(bound)
        self.num_levels, self.features_per_level = num_levels, features_per_level
        if per_level_scale is not None:
            finest_resolution = None
        self.resolutions, self.offsets = level_layout(num_levels, base_resolution, finest_resolution,
                                                      per_level_scale, log2_table_size, dim=3)
        self.output_dim = num_levels * features_per_level
        if backend == "tcnn":
            tcnn = _import_tcnn()
            config = _tcnn_grid_config(num_levels, features_per_level, log2_table_size, base_resolution,
                                       finest_resolution, per_level_scale)
            self.tcnn_grid = tcnn.Encoding(3, config, dtype=torch.float32)
        else:
            self.embeddings = nn.Parameter(torch.empty(self.offsets[-1], features_per_level)  # [E, F]
                                           .uniform_(-INIT_SCALE, INIT_SCALE))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """points [N, 3] in [-bound, bound]^3 → [N, output_dim]."""
        if self.backend == "tcnn":
            return self.tcnn_grid(((points + self.bound) / (2 * self.bound)).clamp(0, 1)).float()
        return hashgrid_ops.hashgrid_encode(points, self.embeddings, self.offsets, self.resolutions, self.bound,
                                            backend=self.backend)

    def extra_repr(self) -> str:
        return (f"levels={self.num_levels}, features={self.features_per_level}, resolutions={self.resolutions[0]}"
                f"..{self.resolutions[-1]}, rows={self.offsets[-1]}, bound={self.bound}, backend={self.backend}")


def _tcnn_grid_config(num_levels, features_per_level, log2_table_size, base_resolution, finest_resolution,
                      per_level_scale=None) -> dict:
    if per_level_scale is None:
        per_level_scale = (finest_resolution / base_resolution) ** (1 / max(num_levels - 1, 1))
    return {"otype": "HashGrid", "n_levels": num_levels, "n_features_per_level": features_per_level,
            "log2_hashmap_size": log2_table_size, "base_resolution": base_resolution,
            "per_level_scale": per_level_scale}


class FrequencyEncoding(nn.Module):
    """Sinusoidal (NeRF positional) encoding.

        out = [x, sin(2^0 π x), cos(2^0 π x), sin(2^1 π x), cos(2^1 π x), ..., cos(2^(K-1) π x)]

    each block D wide (x itself only with include_input). Example: D = 1, K = 1, x = 0.5 → [0.5, 1.0, 0.0].

    Args:
        input_dim: D. num_frequencies: K. include_input: prepend x.

    Shapes: forward(inputs [N, D]) -> [N, D * (2K + include_input)].
    """

    def __init__(self, input_dim: int = 3, num_frequencies: int = 10, include_input: bool = True):
        super().__init__()
        self.input_dim, self.num_frequencies, self.include_input = input_dim, num_frequencies, include_input
        self.output_dim = input_dim * (2 * num_frequencies + int(include_input))
        # Python floats, cast per call: a float32 buffer would round π and spoil float64 inputs
        self.frequencies = [math.pi * 2.0 ** k for k in range(num_frequencies)]

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.shape[-1] != self.input_dim:
            raise ValueError(f"FrequencyEncoding: expected [..., {self.input_dim}] inputs, got {tuple(inputs.shape)}")
        frequencies = torch.tensor(self.frequencies, dtype=inputs.dtype, device=inputs.device)  # [K]
        scaled = inputs[..., None, :] * frequencies[:, None]  # [..., K, D]
        waves = torch.stack([torch.sin(scaled), torch.cos(scaled)], dim=-2)  # [..., K, 2, D]
        waves = waves.flatten(-3)  # [..., K * 2 * D]
        return torch.cat([inputs, waves], dim=-1) if self.include_input else waves


class SHEncoding(nn.Module):
    """Real spherical harmonics of unit directions, degree 1 to 4 (degree^2 outputs; 16 for degree 4).

    Constants and signs as in Instant-NGP / tiny-cuda-nn (orthonormal on the sphere: the integral of Y_i Y_j over
    the sphere is δ_ij). Example: the direction (0, 0, 1) gives Y_0 = 0.28209, Y_2 = 0.48860, Y_6 = 0.63078,
    Y_12 = 0.74635 and zeros elsewhere.

    Shapes: forward(directions [N, 3], unit length) -> [N, degree^2].
    """

    def __init__(self, degree: int = 4):
        super().__init__()
        if not 1 <= degree <= 4:
            raise ConfigError(f"SHEncoding degree must be 1 to 4, got {degree}")
        self.degree = degree
        self.output_dim = degree ** 2

    def forward(self, directions: torch.Tensor) -> torch.Tensor:
        if directions.shape[-1] != 3:
            raise ValueError(f"SHEncoding: expected [..., 3] directions, got {tuple(directions.shape)}")
        return spherical_harmonics(directions, self.degree)


def spherical_harmonics(directions: torch.Tensor, degree: int) -> torch.Tensor:
    """directions [..., 3] (unit) → [..., degree^2] real SH basis values (see SHEncoding)."""
    x, y, z = directions.unbind(-1)
    out = [torch.full_like(x, 0.28209479177387814)]
    if degree > 1:
        out += [-0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x]
    if degree > 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [1.0925484305920792 * x * y, -1.0925484305920792 * y * z,
                0.94617469575755997 * zz - 0.31539156525251999, -1.0925484305920792 * x * z,
                0.54627421529603959 * (xx - yy)]
    if degree > 3:
        out += [0.59004358992664352 * y * (-3.0 * xx + yy), 2.8906114426405538 * x * y * z,
                0.45704579946446572 * y * (1.0 - 5.0 * zz), 0.3731763325901154 * z * (5.0 * zz - 3.0),
                0.45704579946446572 * x * (1.0 - 5.0 * zz), 1.4453057213202769 * z * (xx - yy),
                0.59004358992664352 * x * (-xx + 3.0 * yy)]
    return torch.stack(out, dim=-1)
