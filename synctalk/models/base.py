"""What every head representation gives the training engine, the renderer and inference.

A head (the NeRF head today, Gaussians next) is an ``nn.Module`` that subclasses :class:`HeadRepresentation` and is
registered by name in :mod:`synctalk.models.registry` (``model.head: nerf``) with its own config section
(``model.nerf``). Everything outside ``synctalk/models`` talks to a head through these methods only::

    head = build_head(cfg, spec)                                      # spec: HeadSpec of the subject
    codes = head.encode_audio(features, frames)                       # [B, A]
    out = head.render_pixels(c2w, K, pixels, codes, expressions, appearance_frames=frames, background=behind)
    image = head.render_image(c2w, K, width, height, code, expression, appearance_frame=frame)
    losses = head.losses(out, target, regions, step)                  # dict of weighted terms
    optimizer = AdamW(head.param_groups(lr_grid, lr_mlp))
    head.prepare(ds)                                                  # once, on a new workspace
    head.before_step(step, conditions); ...; head.after_step(step, conditions, optimizer)   # grid, relocation
    head.state_dict() / head.load_state_dict(...)

Shapes: ``R`` rays / pixels, ``A`` audio code size, ``E`` expression size, ``K`` conditionings.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

__all__ = ["HeadRepresentation", "HeadSpec", "PixelRegions", "Conditions"]

Conditions = Callable[[int, int], tuple[Tensor, Tensor]]
"""``conditions(k, seed)`` → (audio codes [k, A], expressions [k, E]) of k training frames drawn with ``seed`` (no
gradient): what a head's step hooks cover, e.g. the occupancy grid's density over several mouths."""


@dataclass(frozen=True)
class HeadSpec:
    """What a head is built from, besides its config section: the subject's side of the contract."""

    audio_feature_shape: tuple[int, ...]        # per-frame audio feature shape (audio_features.npy minus axis 0)
    n_frames: int                               # rows of the per-frame appearance codes
    box: tuple[float, ...] = (-1.0, -1.0, -1.0, 1.0, 1.0, 1.0)   # the head's world box (min xyz, max xyz)
    expression_names: tuple[str, ...] = ()      # blendshapes of the expression input
    mouth_names: tuple[str, ...] = ()           # blendshapes a head predicts from its audio code (may be ())


@dataclass
class PixelRegions:
    """Per-pixel flags of a training batch, [R] bool each (see synctalk.data.sampler.RayBatch)."""

    head: Tensor
    lower_face: Tensor
    image_size: tuple[int, int] | None = None   # (H, W) when the pixels are whole images, row-major, one after another


class HeadRepresentation(nn.Module, ABC):
    """The interface of a head representation (see the module docstring)."""

    name: ClassVar[str] = ""
    """Registry name, the value of ``model.head``."""
    supervision: ClassVar[str] = "rays"
    """What a training step shows the head: "rays" (random pixels of a few frames) or "images" (whole frames,
    for representations that draw whole images at once)."""

    @classmethod
    @abstractmethod
    def from_config(cls, config, spec: HeadSpec) -> HeadRepresentation:
        """Build from the head's own config section (e.g. ``cfg.model.nerf``) and the subject's :class:`HeadSpec`."""

    @property
    @abstractmethod
    def expression_names(self) -> tuple[str, ...]:
        """Blendshapes of the expression input, in order."""

    @property
    @abstractmethod
    def audio_window(self) -> int:
        """Frames of audio features each audio code sees (the window is centred on its frame)."""

    @abstractmethod
    def encode_audio(self, features: Tensor, frame_indices: Tensor | int) -> Tensor:
        """Audio codes: features [N, *shape] of a whole clip, frame indices int or [B] → [A] or [B, A]."""

    @abstractmethod
    def render_pixels(self, c2w: Tensor, K: Tensor, pixels: Tensor, audio_code: Tensor, expression: Tensor,
                      appearance_frames: Tensor | int | None = None, background: Tensor | float | None = None,
                      early_stop_eps: float = 0.0) -> dict[str, Tensor]:
        """Render pixels of cameras.

        Args:
            c2w: [4, 4] one camera, or [R, 4, 4] a camera per pixel.
            K: [3, 3] intrinsics at the pixels' resolution.
            pixels: [R, 2] integer (column, row) pixel coordinates.
            audio_code: [A] or [R, A]; expression: [E] or [R, E].
            appearance_frames: training frame(s) whose appearance to use, int or [R]; None: the neutral one.
            background: None (black), float, [3] or [R, 3]: composited where the head is transparent.
            early_stop_eps: > 0 lets inference stop work once a pixel is opaque to within it.

        Returns:
            ``rgb`` [R, 3], ``opacity`` [R], and maps [R] each: ``audio_attention``, ``expression_attention``
            (what the validation sheets show; zeros when a head has no such notion).
        """

    def render_image(self, c2w: Tensor, K: Tensor, width: int, height: int, audio_code: Tensor, expression: Tensor,
                     appearance_frame: int | None = None, chunk: int | None = None,
                     early_stop_eps: float = 1e-3) -> dict[str, Tensor]:
        """A whole ``height`` x ``width`` image, each output [H*W, ...] (no background: ``rgb`` is premultiplied by
        ``opacity``). Default: :meth:`render_pixels` in chunks of ``chunk`` pixels (None: all at once);
        representations that draw whole images at once (splatting) override it."""
        from synctalk.render.rays import pixel_grid

        pixels = pixel_grid(width, height, device=c2w.device)
        step = chunk or len(pixels)
        parts = [self.render_pixels(c2w, K, pixels[start:start + step], audio_code, expression,
                                    appearance_frames=appearance_frame, early_stop_eps=early_stop_eps)
                 for start in range(0, len(pixels), step)]
        return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}

    @abstractmethod
    def losses(self, outputs: dict[str, Tensor], target: Tensor, regions: PixelRegions, step: int,
               weights) -> dict[str, Tensor]:
        """Weighted loss terms of a :meth:`render_pixels` output against target colours [R, 3]."""

    @abstractmethod
    def param_groups(self, lr_grid: float, lr_mlp: float) -> list[dict]:
        """Optimiser parameter groups, each with a ``name`` (logged) and its learning rate."""

    def prepare(self, ds) -> None:  # noqa: B027 (optional hook)
        """Called once on a new workspace before training, with the subject (a SubjectDataset): e.g. place
        Gaussians on the subject's head."""

    def before_step(self, step: int, conditions: Conditions) -> None:  # noqa: B027 (optional hook)
        """Called before each optimiser step of a stage that trains the head."""

    def after_step(self, step: int, conditions: Conditions, optimizer=None) -> None:  # noqa: B027 (optional hook)
        """Called after each optimiser step (``step`` counts finished steps) with the stage's optimiser: occupancy
        updates, densification or relocation (which reset the moved rows' optimiser state)."""
