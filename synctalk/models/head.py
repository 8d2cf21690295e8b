"""The head of the Dynamic Portrait Renderer: a tri-plane hash field conditioned on audio and expression.

:class:`HeadField` is per-sample only (points, directions, codes → density, colour, extras; no rays).
:class:`HeadModel` is the recipe: audio net + field + occupancy grid + per-frame appearance codes, rendered with
:func:`synctalk.render.render_rays`. Losses live in :mod:`synctalk.models.losses`.

Field layout (ER-NeRF / SyncTalk)::

    x  = (points - centre) / half_size                      # head AABB → [-1, 1]^3
    h  = trihash(x)                                          # [N, 36]
    wa = sigmoid(MLP_a(h)) ;  a' = wa * audio                # audio-spatial attention, [N, 32]
    we = sigmoid(MLP_e(h)) ;  e' = we * expression           # expression attention, [N, E]
    sigma, g = MLP_sigma([h, a', e'])                        # density + geometry feature [N, 15]
    rgb = sigmoid(MLP_c([SH(d), g, appearance]))
    u   = softplus(MLP_u([h, a', e']))                       # per-point uncertainty

The attention weights decide *where* audio (mouth) and expression (eyes, brows) may change the head; the
facial-aware losses in :mod:`synctalk.models.losses` push audio attention out of the upper face and expression
attention out of the lower face.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from dataclasses import field as dataclass_field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from synctalk.data.contract import BLENDSHAPE_NAMES
from synctalk.errors import ConfigError
from synctalk.field.encoding import SHEncoding, TriPlaneHashEncoding
from synctalk.models.audio_net import AudioNet, feature_windows
from synctalk.models.base import Conditions, HeadRepresentation, HeadSpec, PixelRegions
from synctalk.models.losses import HeadLossWeights, head_losses
from synctalk.render import OccupancyGrid, render_rays

__all__ = ["DEFAULT_EXPRESSION_NAMES", "MOUTH_BLENDSHAPE_NAMES", "HeadField", "HeadFieldConfig", "HeadModel",
           "HeadModelConfig", "expression_from_blendshapes", "trunc_exp"]

DEFAULT_EXPRESSION_NAMES: tuple[str, ...] = (
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "eyeBlinkLeft",
    "eyeBlinkRight",
)
DENSITY_ACTIVATIONS = ("trunc_exp", "softplus")
MOUTH_BLENDSHAPE_NAMES: tuple[str, ...] = tuple(name for name in BLENDSHAPE_NAMES
                                                if name.startswith(("jaw", "mouth")))
"""The 27 jaw and mouth ARKit blendshapes: what the audio code is taught to predict (``HeadModel.predict_mouth``)."""


def expression_from_blendshapes(blendshapes: Tensor, names: tuple[str, ...] | list[str] = DEFAULT_EXPRESSION_NAMES
                                ) -> Tensor:
    """Pick the expression channels out of ARKit blendshape scores.

    Args:
        blendshapes: [..., 52] scores in ``BLENDSHAPE_NAMES`` order (``blendshapes.npy`` rows).
        names: blendshape names to keep, in output order.

    Returns:
        [..., E] with ``E = len(names)``. Example: the default names pick columns 1, 2, 3, 4, 5, 9, 10.

    Raises:
        ConfigError: a name that is not an ARKit blendshape (with the closest valid name).
    """
    if blendshapes.shape[-1] != len(BLENDSHAPE_NAMES):
        raise ValueError(f"blendshapes must be [..., {len(BLENDSHAPE_NAMES)}] (ARKit order), got "
                         f"{tuple(blendshapes.shape)}")
    columns = []
    for name in names:
        if name not in BLENDSHAPE_NAMES:
            import difflib

            close = difflib.get_close_matches(name, BLENDSHAPE_NAMES, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown blendshape name '{name}' in the expression names{hint}; valid names are "
                              f"the ARKit names in synctalk.data.contract.BLENDSHAPE_NAMES")
        columns.append(BLENDSHAPE_NAMES.index(name))
    return blendshapes[..., columns]


class _TruncExp(torch.autograd.Function):
    """exp(x) whose gradient uses exp(clamp(x, max=15)): large pre-activations cannot blow up the update."""

    @staticmethod
    def forward(ctx, inputs):
        ctx.save_for_backward(inputs)
        return torch.exp(inputs)

    @staticmethod
    def backward(ctx, grad_out):
        (inputs,) = ctx.saved_tensors
        return grad_out * torch.exp(inputs.clamp(max=15.0))


def trunc_exp(inputs: Tensor) -> Tensor:
    """``exp(x)`` forward, ``exp(min(x, 15))`` in the backward pass (Instant-NGP / torch-ngp density activation)."""
    return _TruncExp.apply(inputs)


def _mlp(size_in: int, size_out: int, hidden: int, layers: int) -> nn.Sequential:
    """``layers`` linear layers (>= 1) with ReLU between them."""
    sizes = [size_in] + [hidden] * (layers - 1) + [size_out]
    modules: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        modules.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            modules.append(nn.ReLU())
    return nn.Sequential(*modules)


@dataclass
class HeadFieldConfig:
    """Sizes of :class:`HeadField`."""

    aabb: tuple[float, float, float, float, float, float] = (-1.0, -1.0, -1.0, 1.0, 1.0, 1.0)
    """Head box (xmin, ymin, zmin, xmax, ymax, zmax) in world units; points are normalised by it."""
    num_levels: int = 12
    """Tri-plane hash levels (the encoding is 3 * num_levels * features_per_level wide)."""
    features_per_level: int = 1
    """Features per level and plane."""
    base_resolution: int = 64
    """Coarsest grid, cells per axis."""
    finest_resolution: int = 512
    """Finest grid, cells per axis."""
    log2_table_size: int = 14
    """Hash table rows per level (log2)."""
    audio_dim: int = 32
    """Audio code size (AudioNet code_dim)."""
    expression_names: tuple[str, ...] = DEFAULT_EXPRESSION_NAMES
    """Blendshapes forming the expression input (eyes and brows: the upper face, which audio does not drive)."""
    expression_dim: int = 7
    """Expression vector size; must equal len(expression_names)."""
    appearance_dim: int = 4
    """Per-frame appearance code size (lighting / exposure drift)."""
    attention_hidden: int = 32
    """Hidden width of the two attention MLPs (2 layers each)."""
    density_hidden: int = 64
    """Hidden width of the density MLP."""
    density_layers: int = 3
    """Linear layers of the density MLP."""
    geo_feat_dim: int = 15
    """Geometry feature passed from the density MLP to the colour MLP."""
    color_hidden: int = 64
    """Hidden width of the colour MLP."""
    color_layers: int = 2
    """Linear layers of the colour MLP."""
    uncertainty_hidden: int = 32
    """Hidden width of the uncertainty MLP (2 layers)."""
    sh_degree: int = 4
    """Spherical-harmonics degree of the view direction encoding (degree^2 values)."""
    density_activation: str = "trunc_exp"
    """"trunc_exp" (exp with a clamped gradient: Instant-NGP, fast to sharpen) or "softplus" (gentler)."""
    backend: str = "auto"
    """Tri-plane encoding backend (see synctalk.field.encoding)."""

    def __post_init__(self):
        if len(self.expression_names) != self.expression_dim:
            raise ConfigError(f"expression_dim is {self.expression_dim} but expression_names has "
                              f"{len(self.expression_names)} names; make them agree")
        if self.density_activation not in DENSITY_ACTIVATIONS:
            raise ConfigError(f"unknown density_activation '{self.density_activation}'; use one of "
                              f"{', '.join(DENSITY_ACTIVATIONS)}")
        if len(self.aabb) != 6 or any(self.aabb[i + 3] <= self.aabb[i] for i in range(3)):
            raise ConfigError(f"aabb must be 6 numbers (min xyz, max xyz) with max > min, got {self.aabb}")


def _per_point(value: Tensor, n_points: int, dim: int, name: str) -> Tensor:
    """[dim] or [N, dim] → [N, dim] (a shared code is broadcast, not copied)."""
    if value.dim() == 1 and value.shape[0] == dim:
        return value.expand(n_points, dim)
    if value.dim() == 2 and value.shape == (n_points, dim):
        return value
    raise ValueError(f"{name} must be [{dim}] or [N, {dim}] with N = {n_points}, got {tuple(value.shape)}")


class HeadField(nn.Module):
    """Per-sample head field (layout in the module docstring).

    Shapes: ``forward(points [N, 3], dirs [N, 3], audio [N, A] or [A], expression [N, E] or [E],
    appearance [N, P] or [P]) -> dict`` with

    - ``sigma`` [N]: density (1 / world units), >= 0;
    - ``rgb`` [N, 3] in (0, 1);
    - ``uncertainty`` [N] >= 0 (softplus);
    - ``audio_attention`` [N] in [0, 1]: RMS of the audio channel weights, ``||wa|| / sqrt(A)``;
    - ``expression_attention`` [N] in [0, 1]: RMS of the expression weights.
    """

    def __init__(self, config: HeadFieldConfig | None = None):
        super().__init__()
        self.config = config = config or HeadFieldConfig()
        aabb = torch.tensor(config.aabb, dtype=torch.float32)
        self.register_buffer("center", (aabb[:3] + aabb[3:]) / 2, persistent=False)
        self.register_buffer("half_size", (aabb[3:] - aabb[:3]) / 2, persistent=False)
        self.encoding = TriPlaneHashEncoding(config.num_levels, config.features_per_level, config.base_resolution,
                                             config.finest_resolution, config.log2_table_size, bound=1.0,
                                             backend=config.backend)
        enc_dim = self.encoding.output_dim
        self.audio_attention = _mlp(enc_dim, config.audio_dim, config.attention_hidden, 2)
        self.expression_attention = _mlp(enc_dim, config.expression_dim, config.attention_hidden, 2)
        cond_dim = enc_dim + config.audio_dim + config.expression_dim
        self.density_net = _mlp(cond_dim, 1 + config.geo_feat_dim, config.density_hidden, config.density_layers)
        self.direction_encoding = SHEncoding(config.sh_degree)
        self.color_net = _mlp(self.direction_encoding.output_dim + config.geo_feat_dim + config.appearance_dim, 3,
                              config.color_hidden, config.color_layers)
        self.uncertainty_net = _mlp(cond_dim, 1, config.uncertainty_hidden, 2)

    def normalize(self, points: Tensor) -> Tensor:
        """World points [N, 3] → [-1, 1]^3 over the head box (outside points are clamped by the encoding)."""
        return (points - self.center) / self.half_size

    def _conditioned(self, points: Tensor, audio: Tensor, expression: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(density-MLP input [N, enc + A + E], audio weights [N, A], expression weights [N, E])."""
        if points.dim() != 2 or points.shape[-1] != 3:
            raise ValueError(f"points must be [N, 3], got {tuple(points.shape)}")
        n_points = points.shape[0]
        audio = _per_point(audio, n_points, self.config.audio_dim, "audio")
        expression = _per_point(expression, n_points, self.config.expression_dim, "expression")
        encoded = self.encoding(self.normalize(points))  # [N, enc]
        audio_weights = torch.sigmoid(self.audio_attention(encoded))  # [N, A]
        expression_weights = torch.sigmoid(self.expression_attention(encoded))  # [N, E]
        inputs = torch.cat([encoded, audio_weights * audio, expression_weights * expression], dim=-1)
        return inputs, audio_weights, expression_weights

    def _activate_density(self, raw: Tensor) -> Tensor:
        return trunc_exp(raw) if self.config.density_activation == "trunc_exp" else F.softplus(raw)

    def density(self, points: Tensor, audio: Tensor, expression: Tensor) -> Tensor:
        """Density only (for the occupancy grid): points [N, 3], audio [A] or [N, A], expression → sigma [N]."""
        inputs, _, _ = self._conditioned(points, audio, expression)
        return self._activate_density(self.density_net(inputs)[:, 0])

    def forward(self, points: Tensor, dirs: Tensor, audio: Tensor, expression: Tensor,
                appearance: Tensor) -> dict[str, Tensor]:
        """See the class docstring. ``dirs`` need not be unit length (they are normalised here)."""
        inputs, audio_weights, expression_weights = self._conditioned(points, audio, expression)
        n_points = points.shape[0]
        if dirs.shape != points.shape:
            raise ValueError(f"dirs must be [N, 3] like points, got {tuple(dirs.shape)}")
        appearance = _per_point(appearance, n_points, self.config.appearance_dim, "appearance")
        hidden = self.density_net(inputs)  # [N, 1 + G]
        sigma = self._activate_density(hidden[:, 0])
        geometry = hidden[:, 1:]
        sh = self.direction_encoding(F.normalize(dirs, dim=-1))
        rgb = torch.sigmoid(self.color_net(torch.cat([sh, geometry, appearance], dim=-1)))
        uncertainty = F.softplus(self.uncertainty_net(inputs)[:, 0])
        return {
            "sigma": sigma,
            "rgb": rgb,
            "uncertainty": uncertainty,
            "audio_attention": audio_weights.norm(dim=-1) / math.sqrt(self.config.audio_dim),
            "expression_attention": expression_weights.norm(dim=-1) / math.sqrt(max(self.config.expression_dim, 1)),
        }


@dataclass
class HeadModelConfig:
    """Sizes and sampling of :class:`HeadModel`."""

    field: HeadFieldConfig = dataclass_field(default_factory=HeadFieldConfig)
    """The head field (its aabb is also the occupancy grid's box)."""
    audio_window: int = 8
    """Frames per audio window (AudioNet temporal attention)."""
    audio_hidden: int = 256
    """Width of AudioNet's per-frame MLP."""
    grid_resolution: int = 64
    """Occupancy grid cells per 2 world units on each axis (the [-1, 1]³ box gets this many per axis; a box
    measured from the subject gets the same cell size)."""
    grid_threshold: float = 0.01
    """Occupancy threshold on the opacity of one marching step, ``1 - exp(-sigma * step_size)`` ~ ``sigma *
    step_size`` (as nerfacc's occupancy grid; the density threshold is this / step_size). Empty space that keeps
    a faint density (~0.05 / unit) is skipped, which removes haze and most samples."""
    grid_warmup_steps: int = 256
    """Steps during which every grid cell is refreshed."""
    grid_update_every: int = 16
    """Occupancy update period in steps."""
    step_size: float | None = None
    """Marching step in world units; None: the box diagonal / 512 (about one step per pixel at 512 px)."""
    max_steps: int = 1024
    """Most samples per ray."""
    render_backend: str = "auto"
    """Marching / compositing backend (synctalk.render)."""
    mouth_names: tuple[str, ...] = ()
    """Blendshapes a linear head predicts from the audio code (e.g. MOUTH_BLENDSHAPE_NAMES); () = no such head.
    Training it makes the code carry the mouth's state (on CPU-length runs the field still did not follow it:
    docs/benchmarks.md, "Does the head's mouth follow its audio?")."""


_CHANNELS = ("uncertainty", "audio_attention", "expression_attention")


class HeadModel(HeadRepresentation):
    """Audio net + head field + occupancy grid + per-frame appearance codes: the ``nerf`` head representation.

    Args:
        config: :class:`HeadModelConfig`.
        audio_feature_shape: per-frame audio feature shape (``audio_features.npy`` minus its first axis).
        n_frames: number of training frames (rows of the appearance embedding).

    Typical training step::

        audio = model.encode_audio(features, frame_index)                 # [32]
        expression = expression_from_blendshapes(blendshapes[frame_index])
        model.update_occupancy(step, audio[None], expression[None])
        out = model.render(rays_o, rays_d, audio, expression, frame_indices=frame_index, background=bg)
    """

    def __init__(self, config: HeadModelConfig | None = None, audio_feature_shape: tuple[int, ...] = (512,),
                 n_frames: int = 1):
        super().__init__()
        self.config = config = config or HeadModelConfig()
        field_config = config.field
        self.audio_net = AudioNet(audio_feature_shape, config.audio_window, field_config.audio_dim,
                                  hidden=config.audio_hidden)
        self.field = HeadField(field_config)
        lo, hi = torch.tensor(field_config.aabb[:3]), torch.tensor(field_config.aabb[3:])
        self.step_size = config.step_size or float(torch.linalg.norm(hi - lo)) / 512
        # a cell is occupied when one marching step through it would be at least grid_threshold opaque
        cells = tuple(max(1, math.ceil(config.grid_resolution * float(size) / 2 - 1e-6)) for size in hi - lo)
        self.grid = OccupancyGrid(torch.tensor(field_config.aabb), cells,
                                  threshold=config.grid_threshold / self.step_size,
                                  warmup_steps=config.grid_warmup_steps, update_every=config.grid_update_every)
        self.appearance = nn.Embedding(n_frames, field_config.appearance_dim)
        # zero codes: every frame starts with the same appearance, and an unseen frame (code 0) matches that start
        nn.init.zeros_(self.appearance.weight)
        self.mouth_head = nn.Linear(field_config.audio_dim, len(config.mouth_names)) if config.mouth_names else None

    name = "nerf"

    @classmethod
    def from_config(cls, config, spec: HeadSpec) -> HeadModel:
        """From ``model.nerf`` (:class:`synctalk.config.NerfHeadConfig`) and the subject's :class:`HeadSpec`."""
        names = tuple(spec.expression_names)
        field_cfg = HeadFieldConfig(aabb=tuple(float(v) for v in spec.box), num_levels=config.levels,
                                    base_resolution=config.base, finest_resolution=config.finest,
                                    features_per_level=config.features, log2_table_size=config.table_log2,
                                    density_hidden=config.hidden, color_hidden=config.hidden,
                                    expression_names=names, expression_dim=len(names))
        return cls(HeadModelConfig(field=field_cfg, grid_resolution=config.grid_resolution,
                                   max_steps=config.max_steps, mouth_names=tuple(spec.mouth_names)),
                   audio_feature_shape=tuple(spec.audio_feature_shape), n_frames=spec.n_frames)

    @property
    def expression_names(self) -> tuple[str, ...]:
        return tuple(self.config.field.expression_names)

    @property
    def audio_window(self) -> int:
        return self.config.audio_window

    def render_pixels(self, c2w: Tensor, K: Tensor, pixels: Tensor, audio_code: Tensor, expression: Tensor,
                      appearance_frames: Tensor | int | None = None, background: Tensor | float | None = None,
                      early_stop_eps: float = 0.0) -> dict[str, Tensor]:
        """:meth:`render` of the rays through ``pixels`` (see :class:`HeadRepresentation`)."""
        from synctalk.render.rays import generate_rays

        rays_o, rays_d = generate_rays(c2w, K, pixels)
        return self.render(rays_o, rays_d, audio_code, expression, frame_indices=appearance_frames,
                           background=background, early_stop_eps=early_stop_eps)

    def losses(self, outputs: dict[str, Tensor], target: Tensor, regions: PixelRegions, step: int,
               weights: HeadLossWeights | None = None) -> dict[str, Tensor]:
        return self.get_losses(outputs, target, lower_face=regions.lower_face, step=step, weights=weights,
                               head_mask=regions.head)

    def after_step(self, step: int, conditions: Conditions, optimizer=None) -> None:
        """Every ``grid_update_every`` steps: the occupancy grid over 8 training frames' conditionings."""
        if step % self.config.grid_update_every == 0:
            codes, expressions = conditions(8, step)
            self.update_occupancy(step, codes, expressions)

    def predict_mouth(self, audio_codes: Tensor) -> Tensor:
        """Mouth blendshapes (``config.mouth_names``, in the units they were trained in) from codes [B, A] → [B, M]."""
        if self.mouth_head is None:
            raise ValueError("this head has no mouth head (HeadModelConfig.mouth_names is empty)")
        return self.mouth_head(audio_codes)

    def encode_audio(self, features: Tensor, frame_indices: Tensor | int) -> Tensor:
        """Audio codes of frames: features [N, *shape] (the whole clip), frame_indices int or [B] → [32] or [B, 32]."""
        single = isinstance(frame_indices, int) or (torch.is_tensor(frame_indices) and frame_indices.dim() == 0)
        indices = torch.as_tensor(frame_indices, device=features.device).reshape(-1)
        codes = self.audio_net(feature_windows(features, indices, self.config.audio_window))
        return codes[0] if single else codes

    def _appearance(self, n_rays: int, frame_indices: Tensor | int | None, appearance: Tensor | None,
                    device: torch.device) -> Tensor:
        if appearance is not None:
            if frame_indices is not None:
                raise ValueError("give frame_indices or appearance, not both")
            return appearance
        if frame_indices is None:
            return torch.zeros(self.config.field.appearance_dim, device=device)
        indices = torch.as_tensor(frame_indices, device=device).long()
        if indices.dim() > 1 or (indices.dim() == 1 and indices.shape[0] != n_rays):
            raise ValueError(f"frame_indices must be an int or [R] with R = {n_rays}, got {tuple(indices.shape)}")
        return self.appearance(indices)

    def render(self, rays_o: Tensor, rays_d: Tensor, audio_code: Tensor, expression: Tensor,
               frame_indices: Tensor | int | None = None, appearance: Tensor | None = None,
               background: Tensor | float | None = None, early_stop_eps: float = 0.0) -> dict[str, Tensor]:
        """Volume-render rays through the head box.

        Args:
            rays_o, rays_d: [R, 3] world rays, unit directions.
            audio_code: [A] shared by all rays (rays of one image) or [R, A] per ray.
            expression: [E] or [R, E].
            frame_indices: int or [R] training frame(s) whose appearance code to use; or give ``appearance``
                ([P] or [R, P]) directly; neither = the zero code (novel frames).
            background: None (black), float, [3] or [R, 3]. ``rgb`` is ``sum_i w_i c_i + (1 - opacity) * bg``.
            early_stop_eps: 0 = one differentiable pass (training); > 0 = stop rays whose transmittance fell below
                it (inference; colour within ``early_stop_eps`` of the full render).

        Returns:
            dict with ``rgb`` [R, 3], ``depth`` [R] (``sum w t``, not divided by opacity), ``opacity`` [R], and the
            weighted per-ray channels ``uncertainty``, ``audio_attention``, ``expression_attention`` [R]
            (``sum_i w_i x_i``, no background term).
        """
        if rays_o.dim() != 2 or rays_o.shape[-1] != 3 or rays_d.shape != rays_o.shape:
            raise ValueError(f"rays_o and rays_d must both be [R, 3], got {tuple(rays_o.shape)}, "
                             f"{tuple(rays_d.shape)}")
        n_rays = rays_o.shape[0]
        appearance = self._appearance(n_rays, frame_indices, appearance, rays_o.device)
        codes = {"audio": audio_code, "expression": expression, "appearance": appearance}
        for name, value in codes.items():
            if value.dim() == 2 and value.shape[0] != n_rays:
                raise ValueError(f"per-ray {name} must have R = {n_rays} rows, got {tuple(value.shape)}")

        def field_fn(points: Tensor, dirs: Tensor, ray_indices: Tensor) -> tuple[Tensor, Tensor]:
            # per-ray codes follow their samples; shared [D] codes broadcast inside the field
            picked = {name: value[ray_indices] if value.dim() == 2 else value for name, value in codes.items()}
            out = self.field(points, dirs, picked["audio"], picked["expression"], picked["appearance"])
            # extra channels ride along as colour channels, so early termination composites them too
            return out["sigma"], torch.cat([out["rgb"]] + [out[name][:, None] for name in _CHANNELS], dim=-1)

        render_background = torch.zeros(3 + len(_CHANNELS), device=rays_o.device, dtype=rays_o.dtype)
        if background is not None:
            background = torch.as_tensor(background, dtype=rays_o.dtype, device=rays_o.device)
            if background.dim() == 2:
                render_background = torch.cat([background, background.new_zeros(n_rays, len(_CHANNELS))], -1)
            else:
                render_background[:3] = background
        out = render_rays(rays_o, rays_d, field_fn, self.step_size, grid=self.grid, max_steps=self.config.max_steps,
                          background=render_background, early_stop_eps=early_stop_eps,
                          backend=self.config.render_backend)
        result = {"rgb": out.colors[:, :3], "depth": out.depths, "opacity": out.opacities}
        for i, name in enumerate(_CHANNELS):
            result[name] = out.colors[:, 3 + i]
        return result

    def get_losses(self, outputs: dict[str, Tensor], target_rgb: Tensor, lower_face: Tensor | None = None,
                   step: int = 0, weights: HeadLossWeights | None = None,
                   head_mask: Tensor | None = None) -> dict[str, Tensor]:
        """Weighted loss terms of a :meth:`render` output: :func:`synctalk.models.losses.head_losses`."""
        return head_losses(outputs, target_rgb, lower_face, step, weights, head_mask)

    @torch.no_grad()
    def update_occupancy(self, step: int, audio_codes: Tensor | None = None, expressions: Tensor | None = None,
                         generator: torch.Generator | None = None) -> bool:
        """Refresh the occupancy grid (every ``grid_update_every`` steps); returns whether it ran.

        Args:
            step: training step.
            audio_codes: [K, A] conditionings to cover (e.g. a few random training frames); default one zero code.
            expressions: [K, E] likewise.

        A cell's density is the max over the K conditionings, so a mouth that is open in only some frames stays
        occupied.
        """
        device = self.grid.density.device
        cfg = self.config.field
        audio_codes = audio_codes if audio_codes is not None else torch.zeros(1, cfg.audio_dim, device=device)
        expressions = expressions if expressions is not None else torch.zeros(1, cfg.expression_dim, device=device)
        if audio_codes.dim() != 2 or expressions.dim() != 2 or audio_codes.shape[0] != expressions.shape[0]:
            raise ValueError(f"audio_codes [K, A] and expressions [K, E] must share K, got "
                             f"{tuple(audio_codes.shape)}, {tuple(expressions.shape)}")

        def density_fn(points: Tensor) -> Tensor:
            return torch.stack([self.field.density(points, audio, expression)
                                for audio, expression in zip(audio_codes, expressions, strict=True)]).amax(0)

        return self.grid.update(step, density_fn, generator=generator)

    def param_groups(self, lr_grid: float, lr_mlp: float, weight_decay: float = 0.0) -> list[dict]:
        """AdamW parameter groups: hash tables (``lr_grid``, no weight decay: most rows are rarely touched) and
        everything else, MLPs, audio net and appearance codes (``lr_mlp``, ``weight_decay``)."""
        grid_params = list(self.field.encoding.parameters())
        grid_ids = {id(p) for p in grid_params}
        other = [p for p in self.parameters() if id(p) not in grid_ids]
        return [{"name": "grid", "params": grid_params, "lr": lr_grid, "weight_decay": 0.0},
                {"name": "mlp", "params": other, "lr": lr_mlp, "weight_decay": weight_decay}]
