"""The torso of the Dynamic Portrait Renderer: a 2D deformation field over image coordinates (ER-NeRF style).

The torso moves little and rigidly with the head, so instead of a second radiance field it is an image-space
model: each pixel is shifted by a pose-dependent 2D offset, then looked up in a learnt multiresolution 2D feature
grid and decoded to colour and alpha::

    p   = pixel in [-1, 1]^2                                       # normalize_pixels
    q   = A^-1 p                                                   # the frame's torso track (canonical -> frame)
    z   = MLP_pose(pose)                                           # pose [6]: axis-angle + translation
    p'  = q + max_offset * tanh(MLP_deform([freq(q), z]))          # deformation
    f   = [bilinear lookup of p' in L dense 2D grids]              # MultiResGrid2D (grid_sample)
    rgb, alpha = sigmoid(prior(p') + MLP_color([f, z, appearance]))

``prior`` is a fixed image of logits, set before training to the training frames' mean torso (``torso_prior``), so
the model starts as the mean frame's torso instead of a half-transparent grey layer over the whole frame; the
networks learn residuals (the colour MLP's last layer starts at zero). Without a prior it is zero.

The body sways on its own: the head pose does not predict where the shoulders are. ``A`` is the torso's 2D affine
motion, tracked on every frame by preprocessing (``torso_track.npy``, like the head pose); the grid and the prior
live in the canonical (template) coordinates, so the mean torso is sharp and each frame gets it where its body is.
Without a track ``A`` is the identity.

:func:`composite_layers` stacks head over torso over background.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from synctalk.data.affine import homogeneous, normalized_affine, pixel_affine, warp_to_canonical
from synctalk.errors import ConfigError
from synctalk.field.encoding import FrequencyEncoding

__all__ = ["MultiResGrid2D", "TorsoConfig", "TorsoModel", "apply_affine", "composite_layers", "homogeneous",
           "invert_affine", "normalize_pixels", "normalized_affine", "pixel_affine", "pose_vector", "torso_prior",
           "warp_to_canonical"]


def pose_vector(c2w: Tensor) -> Tensor:
    """6-D pose of camera-to-world matrices: ``[axis-angle of R (radians), t]``.

    Args:
        c2w: [..., 4, 4] or [..., 3, 4] (``poses.npy`` rows).

    Returns:
        [..., 6]. Example: identity rotation, translation (0, 0, -3) → [0, 0, 0, 0, 0, -3].
    """
    if c2w.shape[-2:] not in ((3, 4), (4, 4)):
        raise ValueError(f"c2w must be [..., 4, 4] or [..., 3, 4], got {tuple(c2w.shape)}")
    from kornia.geometry.conversions import rotation_matrix_to_axis_angle

    rotation = c2w[..., :3, :3]
    axis_angle = rotation_matrix_to_axis_angle(rotation.reshape(-1, 3, 3)).reshape(*rotation.shape[:-2], 3)
    return torch.cat([axis_angle, c2w[..., :3, 3]], dim=-1)


def normalize_pixels(pixels: Tensor, width: int, height: int) -> Tensor:
    """Integer pixel coordinates (u = column, v = row) [R, 2] → pixel centres in [-1, 1]^2: ``(u + 0.5) / W * 2 - 1``.

    Example: W = 4: u = 0 → -0.75, u = 3 → 0.75 (x to the right, y down, as in the image).
    """
    size = torch.tensor([width, height], dtype=torch.float32, device=pixels.device)
    return (pixels.float() + 0.5) / size * 2 - 1


def apply_affine(matrix: Tensor, points: Tensor) -> Tensor:
    """``matrix`` [2, 3] or [R, 2, 3] applied to ``points`` [R, 2]."""
    return (matrix[..., :2] @ points[..., None])[..., 0] + matrix[..., 2]


def invert_affine(matrix: Tensor) -> Tensor:
    """Inverse of affine maps [..., 2, 3]."""
    linear = torch.linalg.inv(matrix[..., :2])
    return torch.cat([linear, -(linear @ matrix[..., 2:])], dim=-1)


class MultiResGrid2D(nn.Module):
    """Dense multiresolution 2D feature grids, sampled bilinearly (``grid_sample``, border clamping).

    Level ``l`` has ``round(base * g^l)`` cells per side, ``g = (finest / base)^(1 / (L - 1))``, and F features.
    Small enough to stay dense (256² × 8 floats = 2 MB), so there is no hashing and it runs anywhere.

    Shapes: forward(coords [R, 2] in [-1, 1]^2, x then y) -> [R, L * F].
    """

    def __init__(self, num_levels: int = 4, base_resolution: int = 32, finest_resolution: int = 256,
                 features_per_level: int = 8, init_scale: float = 1e-4):
        super().__init__()
        growth = (finest_resolution / base_resolution) ** (1 / max(num_levels - 1, 1))
        self.resolutions = [int(round(base_resolution * growth ** level)) for level in range(num_levels)]
        self.grids = nn.ParameterList([
            nn.Parameter(torch.empty(1, features_per_level, res, res).uniform_(-init_scale, init_scale))
            for res in self.resolutions])
        self.output_dim = num_levels * features_per_level

    def forward(self, coords: Tensor) -> Tensor:
        if coords.dim() != 2 or coords.shape[-1] != 2:
            raise ValueError(f"coords must be [R, 2], got {tuple(coords.shape)}")
        sample_at = coords[None, :, None, :]  # [1, R, 1, 2]: grid_sample's (x, y) order
        features = [F.grid_sample(grid, sample_at, mode="bilinear", padding_mode="border", align_corners=True)
                    for grid in self.grids]  # each [1, F, R, 1]
        return torch.cat([f[0, :, :, 0].T for f in features], dim=-1)


@dataclass
class TorsoConfig:
    """Sizes of :class:`TorsoModel`."""

    num_levels: int = 4
    """2D grid levels."""
    base_resolution: int = 32
    """Coarsest grid, cells per side."""
    finest_resolution: int = 256
    """Finest grid, cells per side."""
    features_per_level: int = 8
    """Features per level."""
    pose_dim: int = 6
    """Pose input (pose_vector: axis-angle + translation)."""
    pose_code_dim: int = 8
    """Pose code from the pose MLP."""
    appearance_dim: int = 4
    """Per-frame appearance code size."""
    num_frequencies: int = 6
    """Frequencies of the pixel encoding fed to the deformation MLP."""
    deform_hidden: int = 64
    """Hidden width of the deformation MLP."""
    hidden: int = 64
    """Hidden width of the colour MLP."""
    max_offset: float = 0.2
    """Largest deformation per axis, in normalised units (0.2 = a tenth of the image)."""
    prior_resolution: int = 128
    """Side of the prior logit image (:meth:`TorsoModel.set_prior`)."""

    def __post_init__(self):
        if self.num_levels < 1 or self.finest_resolution < self.base_resolution:
            raise ConfigError(f"torso grid needs num_levels >= 1 and finest_resolution >= base_resolution, got "
                              f"{self.num_levels}, {self.base_resolution}..{self.finest_resolution}")


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class TorsoModel(nn.Module):
    """Pose-conditioned 2D deformation + multiresolution 2D grid → torso colour and alpha.

    Args:
        config: :class:`TorsoConfig`.
        n_frames: training frames (rows of the appearance embedding).
    """

    def __init__(self, config: TorsoConfig | None = None, n_frames: int = 1):
        super().__init__()
        self.config = config = config or TorsoConfig()
        self.pose_net = _mlp([config.pose_dim, 32, config.pose_code_dim])
        self.pixel_encoding = FrequencyEncoding(2, config.num_frequencies)
        self.deform_net = _mlp([self.pixel_encoding.output_dim + config.pose_code_dim, config.deform_hidden,
                                config.deform_hidden, 2])
        # zero offset at the start: the grid first learns the average torso, then the deformation explains motion
        nn.init.zeros_(self.deform_net[-1].weight)
        nn.init.zeros_(self.deform_net[-1].bias)
        self.grid = MultiResGrid2D(config.num_levels, config.base_resolution, config.finest_resolution,
                                   config.features_per_level)
        self.color_net = _mlp([self.grid.output_dim + config.pose_code_dim + config.appearance_dim, config.hidden,
                               config.hidden, 4])
        nn.init.zeros_(self.color_net[-1].weight)  # the output starts as the prior
        nn.init.zeros_(self.color_net[-1].bias)
        res = config.prior_resolution
        self.register_buffer("prior_logits", torch.zeros(1, 4, res, res))  # rgb + alpha logits
        self.register_buffer("follows_track", torch.ones(()))  # 0: trained before torso tracks, ignores them
        self.appearance = nn.Embedding(n_frames, config.appearance_dim)
        nn.init.zeros_(self.appearance.weight)

    @torch.no_grad()
    def set_prior(self, rgb: Tensor, alpha: Tensor, eps: float = 0.02) -> None:
        """Start from a data prior: ``rgb`` [H, W, 3] and ``alpha`` [H, W] in [0, 1] over the whole image (e.g.
        :func:`torso_prior`); they are resized to ``prior_resolution`` and clamped to [eps, 1 - eps]."""
        if rgb.dim() != 3 or rgb.shape[-1] != 3 or alpha.shape != rgb.shape[:2]:
            raise ValueError(f"need rgb [H, W, 3] and alpha [H, W], got {tuple(rgb.shape)}, {tuple(alpha.shape)}")
        image = torch.cat([rgb, alpha[..., None]], dim=-1).permute(2, 0, 1)[None].float()
        image = F.interpolate(image.to(self.prior_logits.device), size=self.prior_logits.shape[-2:], mode="area")
        self.prior_logits.copy_(torch.logit(image.clamp(eps, 1 - eps)))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints from before the prior / the torso track: keep what they were trained with (no prior, no track)
        state_dict.setdefault(prefix + "prior_logits", torch.zeros_like(self.prior_logits))
        state_dict.setdefault(prefix + "follows_track", torch.zeros_like(self.follows_track))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def render(self, pixels: Tensor, pose: Tensor, frame_indices: Tensor | int | None = None,
               appearance: Tensor | None = None, track: Tensor | None = None) -> dict[str, Tensor]:
        """Torso colour and alpha at pixels.

        Args:
            pixels: [R, 2] coordinates in [-1, 1]^2 (:func:`normalize_pixels`).
            pose: [6] (one frame) or [R, 6] (:func:`pose_vector`).
            frame_indices: int or [R] for the appearance code; or ``appearance`` [P] / [R, P]; neither = zero code.
            track: [2, 3] or [R, 2, 3] torso track (normalised affine, canonical → frame); None = identity (also
                for models trained before tracks existed).

        Returns:
            dict with ``rgb`` [R, 3] (straight, not premultiplied) in (0, 1), ``alpha`` [R] in (0, 1) and
            ``offset`` [R, 2] (the deformation in canonical coordinates, normalised units).
        """
        if pixels.dim() != 2 or pixels.shape[-1] != 2:
            raise ValueError(f"pixels must be [R, 2] in [-1, 1], got {tuple(pixels.shape)}")
        n_rays = pixels.shape[0]
        cfg = self.config
        pose = _per_ray(pose, n_rays, cfg.pose_dim, "pose")
        if appearance is None:
            if frame_indices is None:
                appearance = pixels.new_zeros(cfg.appearance_dim)
            else:
                appearance = self.appearance(torch.as_tensor(frame_indices, device=pixels.device).long())
        appearance = _per_ray(appearance, n_rays, cfg.appearance_dim, "appearance")
        if track is not None and bool(self.follows_track):
            if track.shape[-2:] != (2, 3) or track.dim() not in (2, 3) or (track.dim() == 3 and len(track) != n_rays):
                raise ValueError(f"track must be [2, 3] or [{n_rays}, 2, 3], got {tuple(track.shape)}")
            pixels = apply_affine(invert_affine(track), pixels)
        pose_code = self.pose_net(pose)  # [R, Z]
        offset = cfg.max_offset * torch.tanh(self.deform_net(torch.cat([self.pixel_encoding(pixels), pose_code], -1)))
        moved = pixels + offset
        features = self.grid(moved)
        prior = F.grid_sample(self.prior_logits, moved[None, :, None, :], mode="bilinear", padding_mode="border",
                              align_corners=False)[0, :, :, 0].T  # [R, 4]; pixel centres as normalize_pixels
        out = prior + self.color_net(torch.cat([features, pose_code, appearance], dim=-1))
        return {"rgb": torch.sigmoid(out[:, :3]), "alpha": torch.sigmoid(out[:, 3]), "offset": offset}

    def param_groups(self, lr_grid: float, lr_mlp: float, weight_decay: float = 0.0) -> list[dict]:
        """AdamW groups: the 2D grids (``lr_grid``, no weight decay) and the MLPs + appearance codes (``lr_mlp``)."""
        grid_params = list(self.grid.parameters())
        grid_ids = {id(p) for p in grid_params}
        other = [p for p in self.parameters() if id(p) not in grid_ids]
        return [{"name": "grid", "params": grid_params, "lr": lr_grid, "weight_decay": 0.0},
                {"name": "mlp", "params": other, "lr": lr_mlp, "weight_decay": weight_decay}]


def torso_prior(frames, neck_torso_labels: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Mean torso of frames: ``(rgb [H, W, 3], alpha [H, W])`` in [0, 1] for :meth:`TorsoModel.set_prior`.

    Args:
        frames: iterable of ``(image [H, W, 3] uint8, parsing [H, W] labels)``.
        neck_torso_labels: parsing labels that are torso (the neck and torso).

    ``alpha`` is the fraction of frames where a pixel is torso; ``rgb`` its mean colour there, pulled towards the
    mean colour of all torso pixels where it is rarely torso (by one frame's weight).
    """
    colour_sum, count, n = 0.0, 0.0, 0
    for image, parsing in frames:
        mask = np.isin(parsing, neck_torso_labels).astype(np.float64)
        colour_sum = colour_sum + image * mask[..., None] / 255
        count = count + mask
        n += 1
    if n == 0:
        raise ValueError("torso_prior needs at least one frame")
    overall = colour_sum.sum((0, 1)) / max(count.sum(), 1)
    rgb = (colour_sum + overall) / (count + 1)[..., None]
    return torch.from_numpy(rgb).float(), torch.from_numpy(count / n).float()


def _per_ray(value: Tensor, n_rays: int, dim: int, name: str) -> Tensor:
    if value.dim() == 1 and value.shape[0] == dim:
        return value.expand(n_rays, dim)
    if value.shape == (n_rays, dim):
        return value
    raise ValueError(f"{name} must be [{dim}] or [R, {dim}] with R = {n_rays}, got {tuple(value.shape)}")


def composite_layers(head_rgb: Tensor, head_alpha: Tensor, torso_rgb: Tensor, torso_alpha: Tensor,
                     background: Tensor | float) -> Tensor:
    """Head over torso over background.

    ``out = head_rgb + (1 - head_alpha) * (torso_alpha * torso_rgb + (1 - torso_alpha) * background)``

    Args:
        head_rgb: [R, 3] **premultiplied** head colour (``HeadModel.render`` with no background, i.e.
            ``sum_i w_i c_i``).
        head_alpha: [R] head opacity.
        torso_rgb: [R, 3] **straight** torso colour (``TorsoModel.render``).
        torso_alpha: [R] torso alpha.
        background: [R, 3], [3] or a float.

    Returns:
        [R, 3]. Example: head 0.3 premultiplied at alpha 0.5, torso 1.0 at alpha 0.5, background 0.2 →
        0.3 + 0.5 * (0.5 + 0.1) = 0.6.
    """
    if head_rgb.shape != torso_rgb.shape or head_alpha.shape != head_rgb.shape[:-1] or \
            torso_alpha.shape != torso_rgb.shape[:-1]:
        raise ValueError(f"need head_rgb/torso_rgb [R, 3] and alphas [R], got {tuple(head_rgb.shape)}, "
                         f"{tuple(head_alpha.shape)}, {tuple(torso_rgb.shape)}, {tuple(torso_alpha.shape)}")
    background = torch.as_tensor(background, dtype=head_rgb.dtype, device=head_rgb.device)
    torso_over_bg = torso_alpha[:, None] * torso_rgb + (1 - torso_alpha[:, None]) * background
    return head_rgb + (1 - head_alpha[:, None]) * torso_over_bg
