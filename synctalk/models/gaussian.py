"""The Gaussian head (``model.head: gaussian``): audio-driven 3-D Gaussians over a canonical head, splatted.

Canonical Gaussians live in the head-centred world of ``poses.npy`` (seeded by
:mod:`synctalk.models.gaussian_init`); each frame deforms them from the tri-plane hash features of their canonical
centres, the frame's audio code and its upper-face expression, with per-Gaussian attention as in the NeRF head::

    x  = (mean - centre) / half_size                      # canonical centre in the head box → [-1, 1]^3
    h  = trihash(x)                                       # [N, enc]
    wa = sigmoid(MLP_a(h)) ;  we = sigmoid(MLP_e(h))      # audio / expression attention
    d  = MLP_d([h, wa * audio, we * expression])          # [N, 10]: Δposition, Δrotation (quaternion), Δlog-scale
    mean' = mean + d[:3] ;  quat' = quat + d[3:7] ;  scale' = exp(log_scale + d[7:])

``MLP_d``'s last layer starts at zero, so training starts from the canonical head. Colour (spherical harmonics of
degree ``sh_degree``) and opacity are per Gaussian; a per-frame appearance code adds a colour gain and offset.

The inside of the mouth (teeth, tongue, cavity) is a second set of Gaussians moved by the audio alone
(``MLP_m([h, audio])`` → Δposition), splatted on its own and composited behind the face: where the lips part, the
face's Gaussians move away and the mouth shows through.

The count is fixed (``count`` + ``mouth_count``, the cap): Gaussians whose opacity falls below ``min_opacity`` are
relocated onto live ones drawn by opacity (3DGS-MCMC style; the source's opacity is shared so the image hardly
changes), every ``relocate_every`` steps until ``relocate_until``. Checkpoints therefore keep their shapes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cuda_ext.rasterize import ops as raster
from synctalk.field.encoding import TriPlaneHashEncoding, spherical_harmonics
from synctalk.models.audio_net import AudioNet, feature_windows
from synctalk.models.base import Conditions, HeadRepresentation, HeadSpec, PixelRegions
from synctalk.models.head import _mlp as mlp
from synctalk.models.losses import HeadLossWeights, head_losses, optional_lpips, ssim_loss

__all__ = ["GaussianHead", "GaussianHeadSettings"]

log = logging.getLogger("synctalk.models")

SH_C0 = 0.28209479177387814
CHANNELS = ("audio_attention", "expression_attention")


def _mlp(size_in: int, size_out: int, hidden: int, layers: int, zero_last: bool = False) -> nn.Sequential:
    """The NeRF head's MLP; ``zero_last`` starts its output at zero (the deformation starts at the canonical head)."""
    net = mlp(size_in, size_out, hidden, layers)
    if zero_last:
        nn.init.zeros_(net[-1].weight)
        nn.init.zeros_(net[-1].bias)
    return net


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


@dataclass
class GaussianHeadSettings:
    """Sizes of :class:`GaussianHead` (``model.gaussian`` in the config, see synctalk.config.GaussianHeadConfig)."""

    count: int = 20000
    mouth_count: int = 1500
    sh_degree: int = 1
    levels: int = 8
    base: int = 32
    finest: int = 256
    table_log2: int = 14
    hidden: int = 64
    audio_dim: int = 32
    audio_window: int = 8
    audio_hidden: int = 256
    appearance_dim: int = 4
    init_opacity: float = 0.1
    min_opacity: float = 0.005
    relocate_every: int = 100
    relocate_until: int = 3000
    lr_means: float = 1.6e-4
    lr_scales: float = 5e-3
    lr_quats: float = 1e-3
    lr_opacity: float = 5e-2
    lr_sh: float = 2.5e-3
    ssim_weight: float = 0.2
    lpips_weight: float = 0.01
    box: tuple[float, ...] = (-1.0, -1.0, -1.0, 1.0, 1.0, 1.0)
    expression_names: tuple[str, ...] = ()
    mouth_names: tuple[str, ...] = ()
    backend: str = "auto"


class _GaussianSet(nn.Module):
    """Canonical Gaussians: centres, log-scales, rotations, opacity logits and SH colour coefficients."""

    def __init__(self, count: int, sh_degree: int):
        super().__init__()
        self.means = nn.Parameter(torch.zeros(count, 3))
        self.log_scales = nn.Parameter(torch.full((count, 3), math.log(0.02)))
        self.quats = nn.Parameter(torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(count, 1))
        self.opacity_logits = nn.Parameter(torch.zeros(count))
        self.sh = nn.Parameter(torch.zeros(count, (sh_degree + 1) ** 2, 3))

    @torch.no_grad()
    def seed(self, points: np.ndarray, rgb: np.ndarray, opacity: float) -> None:
        from synctalk.models.gaussian_init import nearest_spacing

        device = self.means.device
        self.means.copy_(torch.as_tensor(points, device=device))
        spacing = torch.as_tensor(nearest_spacing(np.asarray(points, np.float64)), dtype=torch.float32,
                                  device=device)
        self.log_scales.copy_(spacing.log()[:, None].expand(-1, 3))
        self.opacity_logits.fill_(_logit(opacity))
        self.sh.zero_()
        self.sh[:, 0] = (torch.as_tensor(rgb, device=device) - 0.5) / SH_C0

    def parameter_groups(self, prefix: str, settings: GaussianHeadSettings, extent: float) -> list[dict]:
        s = settings
        return [{"name": f"{prefix}means", "params": [self.means], "lr": s.lr_means * extent, "weight_decay": 0.0},
                {"name": f"{prefix}scales", "params": [self.log_scales], "lr": s.lr_scales, "weight_decay": 0.0},
                {"name": f"{prefix}quats", "params": [self.quats], "lr": s.lr_quats, "weight_decay": 0.0},
                {"name": f"{prefix}opacity", "params": [self.opacity_logits], "lr": s.lr_opacity,
                 "weight_decay": 0.0},
                {"name": f"{prefix}sh", "params": [self.sh], "lr": s.lr_sh, "weight_decay": 0.0}]

    def colours(self, means: Tensor, camera_centre: Tensor) -> Tensor:
        """[N, 3] colours seen from ``camera_centre`` (SH of the viewing direction, +0.5, clamped at 0)."""
        degree = int(round(math.sqrt(self.sh.shape[1]))) - 1
        if degree == 0:
            return (SH_C0 * self.sh[:, 0] + 0.5).clamp_min(0)
        dirs = F.normalize(means - camera_centre, dim=-1)
        basis = spherical_harmonics(dirs, degree + 1)                      # [N, (d+1)^2]
        return (torch.einsum("nk,nkc->nc", basis, self.sh) + 0.5).clamp_min(0)

    @torch.no_grad()
    def relocate(self, min_opacity: float, generator: torch.Generator | None = None) -> Tensor:
        """Move the Gaussians below ``min_opacity`` onto live ones drawn by opacity; returns the moved rows."""
        opacity = torch.sigmoid(self.opacity_logits)
        dead = opacity < min_opacity
        n_dead = int(dead.sum())
        if n_dead == 0 or n_dead == len(opacity):
            return torch.zeros(0, dtype=torch.long, device=opacity.device)
        moved = dead.nonzero()[:, 0]
        weights = torch.where(dead, torch.zeros_like(opacity), opacity)
        sources = torch.multinomial(weights, n_dead, replacement=True, generator=generator)
        # a source drawn k times and its k copies share its opacity: 1 - (1 - o)^(1 / (k + 1)) each
        shares = torch.bincount(sources, minlength=len(opacity)).float() + 1
        shared = 1 - (1 - opacity).clamp_min(1e-6) ** (1 / shares)
        new_logits = torch.logit(shared.clamp(1e-4, 1 - 1e-4))
        for tensor in (self.means, self.log_scales, self.quats, self.sh):
            tensor[moved] = tensor[sources]
        scale = self.log_scales[moved].exp()
        noise = torch.randn(moved.shape[0], 3, device=scale.device, generator=generator)
        self.means[moved] += noise * scale * 0.5
        touched = sources.unique()
        self.opacity_logits[touched] = new_logits[touched]
        self.opacity_logits[moved] = new_logits[sources]
        return moved


class GaussianHead(HeadRepresentation):
    """Audio-driven 3-D Gaussians of the head plus the inside of the mouth (module docstring)."""

    name = "gaussian"
    supervision = "images"

    def __init__(self, settings: GaussianHeadSettings, audio_feature_shape: tuple[int, ...], n_frames: int):
        super().__init__()
        self.settings = s = settings
        box = torch.tensor(s.box, dtype=torch.float32)
        self.register_buffer("centre", (box[:3] + box[3:]) / 2, persistent=False)
        self.register_buffer("half_size", (box[3:] - box[:3]) / 2, persistent=False)
        self.extent = float(torch.linalg.norm(box[3:] - box[:3]) / 2)
        self.audio_net = AudioNet(audio_feature_shape, s.audio_window, s.audio_dim, hidden=s.audio_hidden)
        self.encoding = TriPlaneHashEncoding(s.levels, 1, s.base, s.finest, s.table_log2, bound=1.0,
                                             backend=s.backend)
        enc = self.encoding.output_dim
        n_expr = len(s.expression_names)
        self.audio_attention = _mlp(enc, s.audio_dim, 32, 2)
        self.expression_attention = _mlp(enc, max(n_expr, 1), 32, 2)
        self.deform_net = _mlp(enc + s.audio_dim + n_expr, 10, s.hidden, 3, zero_last=True)
        self.mouth_net = _mlp(enc + s.audio_dim, 3, s.hidden // 2, 3, zero_last=True)
        self.face = _GaussianSet(s.count, s.sh_degree)
        self.mouth = _GaussianSet(s.mouth_count, s.sh_degree)
        self.appearance = nn.Embedding(n_frames, s.appearance_dim)
        nn.init.zeros_(self.appearance.weight)
        self.appearance_net = nn.Linear(s.appearance_dim, 6)   # zero codes (all frames at first, unseen frames)
        nn.init.zeros_(self.appearance_net.bias)               # give gain 1 and offset 0
        self.mouth_head = nn.Linear(s.audio_dim, len(s.mouth_names)) if s.mouth_names else None
        self._cache: tuple | None = None

    @classmethod
    def from_config(cls, config, spec: HeadSpec) -> GaussianHead:
        """From ``model.gaussian`` (:class:`synctalk.config.GaussianHeadConfig`) and the subject's spec."""
        fields = {name: getattr(config, name) for name in GaussianHeadSettings.__dataclass_fields__
                  if hasattr(config, name)}
        settings = GaussianHeadSettings(**fields, box=tuple(float(v) for v in spec.box),
                                        expression_names=tuple(spec.expression_names),
                                        mouth_names=tuple(spec.mouth_names))
        return cls(settings, tuple(spec.audio_feature_shape), spec.n_frames)

    # ----------------------------------------------------------------------------------------- interface
    @property
    def expression_names(self) -> tuple[str, ...]:
        return tuple(self.settings.expression_names)

    @property
    def audio_window(self) -> int:
        return self.settings.audio_window

    def encode_audio(self, features: Tensor, frame_indices: Tensor | int) -> Tensor:
        single = isinstance(frame_indices, int) or (torch.is_tensor(frame_indices) and frame_indices.dim() == 0)
        indices = torch.as_tensor(frame_indices, device=features.device).reshape(-1)
        codes = self.audio_net(feature_windows(features, indices, self.settings.audio_window))
        return codes[0] if single else codes

    def predict_mouth(self, audio_codes: Tensor) -> Tensor:
        if self.mouth_head is None:
            raise ValueError("this head has no mouth head (train.mouth_weight is 0)")
        return self.mouth_head(audio_codes)

    def prepare(self, ds) -> None:
        """Seed the Gaussians on the subject (synctalk.models.gaussian_init), with the canonical face mesh when
        the Face Landmarker bundle is at hand."""
        from synctalk.errors import AssetError
        from synctalk.face.canonical import load_canonical_face
        from synctalk.models.gaussian_init import seed_points

        try:
            face = load_canonical_face()
        except AssetError as exc:
            log.warning("the Gaussian head starts without the canonical face mesh: %s", exc)
            face = None
        s = self.settings
        self.seed(seed_points(ds, s.box, s.count, s.mouth_count, face=face))

    def seed(self, seeds) -> None:
        """Place the canonical Gaussians on :class:`synctalk.models.gaussian_init.SeedPoints` (a new workspace)."""
        self.face.seed(seeds.head, seeds.head_rgb, self.settings.init_opacity)
        self.mouth.seed(seeds.mouth, seeds.mouth_rgb, 0.5)
        self._cache = None

    def train(self, mode: bool = True):
        self._cache = None
        return super().train(mode)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._cache = None
        state_dict.pop(prefix + "seeded", None)   # an unused buffer of workspaces trained before 917431a
        return super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------------------------------- deformation
    def _canonical(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(face features [N, enc], audio weights [N, A], expression weights [N, E], mouth features [M, enc]);
        cached while the weights cannot change (eval mode without autograd)."""
        frozen = not self.training and not torch.is_grad_enabled()
        key = (self.face.means._version, self.mouth.means._version, self.encoding.parameters().__next__()._version)
        if frozen and self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        # the features are looked up at the centres without a gradient back to them (the centres learn from the
        # image; hash-grid gradients w.r.t. positions are noisy, and the fast trihash paths do not give them)
        h = self.encoding(((self.face.means.detach() - self.centre) / self.half_size).clamp(-1, 1))
        hm = self.encoding(((self.mouth.means.detach() - self.centre) / self.half_size).clamp(-1, 1))
        result = (h, torch.sigmoid(self.audio_attention(h)), torch.sigmoid(self.expression_attention(h)), hm)
        self._cache = (key, result) if frozen else None
        return result

    def deform(self, audio_code: Tensor, expression: Tensor) -> dict[str, Tensor]:
        """Deformed Gaussians of one frame: face and mouth means, quats, scales, opacities and attention."""
        h, wa, we, hm = self._canonical()
        n, n_expr = h.shape[0], len(self.settings.expression_names)
        inputs = [h, wa * audio_code]
        if n_expr:
            inputs.append(we[:, :n_expr] * expression)
        d = self.deform_net(torch.cat(inputs, -1))
        dm = self.mouth_net(torch.cat([hm, audio_code.expand(hm.shape[0], -1)], -1))
        face, mouth = self.face, self.mouth
        return {
            "means": face.means + d[:, :3], "quats": face.quats + d[:, 3:7],
            "scales": torch.exp(face.log_scales + d[:, 7:10]), "opacities": torch.sigmoid(face.opacity_logits),
            "audio_attention": wa.norm(dim=-1) / math.sqrt(wa.shape[1]),
            "expression_attention": (we[:, :n_expr].norm(dim=-1) / math.sqrt(n_expr) if n_expr
                                     else h.new_zeros(n)),
            "mouth_means": mouth.means + dm, "mouth_quats": mouth.quats, "mouth_scales": mouth.log_scales.exp(),
            "mouth_opacities": torch.sigmoid(mouth.opacity_logits),
        }

    # ------------------------------------------------------------------------------------------- rendering
    def splat(self, c2w: Tensor, K: Tensor, width: int, height: int, audio_code: Tensor, expression: Tensor,
              appearance_frame: Tensor | int | None = None, crop: tuple[int, int, int, int] | None = None
              ) -> dict[str, Tensor]:
        """One camera's image: ``rgb`` [H, W, 3] premultiplied, ``opacity`` [H, W], the attention maps [H, W]
        and the face's projected centres ``means2d`` (None with gsplat). ``crop`` (x0, y0, w, h): only that
        window of the image (outputs [h, w, ...])."""
        g = self.deform(audio_code, expression)
        rotation, centre = c2w[:3, :3], c2w[:3, 3]
        viewmat = torch.eye(4, device=c2w.device, dtype=c2w.dtype)
        viewmat[:3, :3] = rotation.T
        viewmat[:3, 3] = -rotation.T @ centre
        gain, offset = self._appearance(appearance_frame, c2w.device)
        face_rgb = self.face.colours(g["means"], centre) * gain + offset
        mouth_rgb = self.mouth.colours(g["mouth_means"], centre) * gain + offset
        face_channels = torch.cat([face_rgb, g["audio_attention"][:, None], g["expression_attention"][:, None]], 1)
        ones = mouth_rgb.new_ones(mouth_rgb.shape[0], 1)
        mouth_channels = torch.cat([mouth_rgb, ones, torch.zeros_like(ones)], 1)
        backend = self.settings.backend
        face_img, face_alpha, means2d = raster.splat(g["means"], g["quats"], g["scales"], g["opacities"],
                                                     face_channels, viewmat, K, width, height, crop=crop,
                                                     backend=backend)
        mouth_img, mouth_alpha, _ = raster.splat(g["mouth_means"], g["mouth_quats"], g["mouth_scales"],
                                                 g["mouth_opacities"], mouth_channels, viewmat, K, width, height,
                                                 crop=crop, backend=backend)
        behind = 1 - face_alpha
        image = face_img + behind[..., None] * mouth_img
        alpha = face_alpha + behind * mouth_alpha
        return {"rgb": image[..., :3], "opacity": alpha, "audio_attention": image[..., 3],
                "expression_attention": image[..., 4], "means2d": means2d}

    def _appearance(self, frame: Tensor | int | None, device) -> tuple[Tensor, Tensor]:
        if frame is None:
            return torch.ones(3, device=device), torch.zeros(3, device=device)
        code = self.appearance(torch.as_tensor(frame, device=device).reshape(()))
        out = self.appearance_net(code)
        return 1 + out[:3], out[3:]

    def render_image(self, c2w: Tensor, K: Tensor, width: int, height: int, audio_code: Tensor, expression: Tensor,
                     appearance_frame: int | None = None, chunk: int | None = None,
                     early_stop_eps: float = 1e-3) -> dict[str, Tensor]:
        """The whole image in one splat pass (``chunk`` and ``early_stop_eps`` do not apply)."""
        out = self.splat(c2w, K, width, height, audio_code, expression, appearance_frame)
        return {"rgb": out["rgb"].reshape(-1, 3), "opacity": out["opacity"].reshape(-1),
                **{name: out[name].reshape(-1) for name in CHANNELS}}

    def render_pixels(self, c2w: Tensor, K: Tensor, pixels: Tensor, audio_code: Tensor, expression: Tensor,
                      appearance_frames: Tensor | int | None = None, background: Tensor | float | None = None,
                      early_stop_eps: float = 0.0) -> dict[str, Tensor]:
        """Splat the bounding box of each camera's pixels and pick the pixels (see HeadRepresentation).

        Per-pixel inputs must be constant over runs of one camera (one frame's pixels side by side, as training
        batches are); a run is where ``appearance_frames`` (or, without it, the camera) stays the same. The image
        the box is cut from is the one K's principal point centres (2 cx x 2 cy, the subject's frames)."""
        n = pixels.shape[0]
        runs = self._camera_runs(c2w, appearance_frames, n)
        parts = []
        for start, stop in runs:
            pick = slice(start, stop)
            cam = c2w if c2w.dim() == 2 else c2w[start]
            code = audio_code if audio_code.dim() == 1 else audio_code[start]
            expr = expression if expression.dim() == 1 else expression[start]
            frame = appearance_frames
            if torch.is_tensor(frame) and frame.dim() == 1:
                frame = frame[start]
            px = pixels[pick]
            lo = px.amin(0)
            hi = px.amax(0) + 1
            x0, y0 = int(lo[0]), int(lo[1])
            w, h = int(hi[0]) - x0, int(hi[1]) - y0
            full_w, full_h = max(int(round(2 * float(K[0, 2]))), x0 + w), max(int(round(2 * float(K[1, 2]))), y0 + h)
            out = self.splat(cam, K, full_w, full_h, code, expr, frame, crop=(x0, y0, w, h))
            rows, cols = px[:, 1] - y0, px[:, 0] - x0
            parts.append({"rgb": out["rgb"][rows, cols], "opacity": out["opacity"][rows, cols],
                          **{name: out[name][rows, cols] for name in CHANNELS}})
        result = {name: torch.cat([part[name] for part in parts]) for name in parts[0]}
        if background is not None:
            background = torch.as_tensor(background, dtype=result["rgb"].dtype, device=result["rgb"].device)
            result["rgb"] = result["rgb"] + (1 - result["opacity"])[:, None] * background
        return result

    @staticmethod
    def _camera_runs(c2w: Tensor, frames: Tensor | int | None, n: int) -> list[tuple[int, int]]:
        if c2w.dim() == 2:
            return [(0, n)]
        if torch.is_tensor(frames) and frames.dim() == 1:
            keys = frames
        else:
            keys = torch.unique_consecutive(c2w.reshape(n, -1), dim=0, return_inverse=True)[1]
        _, counts = torch.unique_consecutive(keys, return_counts=True)
        bounds = np.concatenate([[0], np.cumsum(counts.cpu().numpy())])
        return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    # ------------------------------------------------------------------------------------------- training
    def losses(self, outputs: dict[str, Tensor], target: Tensor, regions: PixelRegions, step: int,
               weights: HeadLossWeights | None = None) -> dict[str, Tensor]:
        """The NeRF head's terms (L1, opacity entropy, masked attention, silhouette) plus D-SSIM, and LPIPS when its
        weights are in the model cache, when the pixels form whole images (``regions.image_size``)."""
        losses = head_losses(outputs, target, regions.lower_face, step, weights, regions.head)
        if regions.image_size is None:
            return losses
        h, w = regions.image_size   # whole frames: image losses too
        pred = outputs["rgb"].reshape(-1, h, w, 3).permute(0, 3, 1, 2)
        gt = target.reshape(-1, h, w, 3).permute(0, 3, 1, 2)
        if self.settings.ssim_weight > 0:
            losses["ssim"] = self.settings.ssim_weight * ssim_loss(pred, gt)
        if (lpips := optional_lpips(self.settings.lpips_weight, target.device, "gaussian head")) is not None:
            from synctalk.models.lpips import perceptual_loss

            losses["lpips"] = self.settings.lpips_weight * perceptual_loss(lpips, pred, gt)
        return losses

    def param_groups(self, lr_grid: float, lr_mlp: float) -> list[dict]:
        """Per-Gaussian tensors at their own rates (3DGS's; centres scaled by the head's size), the hash tables at
        ``lr_grid`` and the networks at ``lr_mlp``."""
        groups = self.face.parameter_groups("", self.settings, self.extent)
        groups += self.mouth.parameter_groups("mouth_", self.settings, self.extent)
        grid = list(self.encoding.parameters())
        taken = {id(p) for g in groups for p in g["params"]} | {id(p) for p in grid}
        networks = [p for p in self.parameters() if id(p) not in taken]
        return groups + [{"name": "grid", "params": grid, "lr": lr_grid, "weight_decay": 0.0},
                         {"name": "mlp", "params": networks, "lr": lr_mlp, "weight_decay": 0.0}]

    def after_step(self, step: int, conditions: Conditions, optimizer=None) -> None:
        """Relocate transparent Gaussians every ``relocate_every`` steps up to ``relocate_until`` (their optimiser
        moments restart at zero)."""
        s = self.settings
        if s.relocate_every <= 0 or step % s.relocate_every or step > s.relocate_until:
            return
        generator = torch.Generator(self.face.means.device)
        generator.manual_seed(step)
        for gaussians in (self.face, self.mouth):
            moved = gaussians.relocate(s.min_opacity, generator)
            if optimizer is not None and len(moved):
                _reset_moments(optimizer, [p for p in gaussians.parameters()], moved)
        self._cache = None


def _reset_moments(optimizer, params: list[Tensor], rows: Tensor) -> None:
    for param in params:
        state = optimizer.state.get(param, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key][rows] = 0
