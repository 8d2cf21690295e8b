"""One full image from the trained models: the head field over the torso model over the background plate.

Training (validation renders), `synctalk render` and `synctalk stream` all draw frames through
:func:`render_frame`, so what is evaluated is what users get.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from synctalk.models.base import HeadRepresentation
from synctalk.models.torso import TorsoModel, composite_layers, normalize_pixels

__all__ = ["FrameInputs", "FrameOutput", "render_frame", "scaled_intrinsics"]

HEAD_MAPS = ("audio_attention", "expression_attention", "opacity")


@dataclass
class FrameInputs:
    """What one frame is conditioned on.

    Attributes:
        c2w: [4, 4] camera-to-world pose (the subject's ``poses.npy`` convention).
        audio_code: [A] from ``HeadModel.encode_audio``.
        expression: [E] upper-face blendshapes (``expression_from_blendshapes``).
        torso_pose: [6] ``pose_vector(c2w)``.
        appearance_frame: training frame whose appearance codes to use; None = the zero code (novel frames).
        torso_track: [2, 3] where the body is (the pose frame's ``torso_track.npy`` row); None = the template.
    """

    c2w: Tensor
    audio_code: Tensor
    expression: Tensor
    torso_pose: Tensor
    appearance_frame: int | None = None
    torso_track: Tensor | None = None


@dataclass
class FrameOutput:
    rgb: Tensor                   # [H, W, 3] in [0, 1] (not clamped)
    head_alpha: Tensor            # [H, W] head opacity
    torso_alpha: Tensor | None    # [H, W] torso alpha (None without a torso model)
    maps: dict[str, Tensor]       # HEAD_MAPS, each [H, W]: opacity-weighted attention, opacity


def scaled_intrinsics(K: Tensor, scale: float) -> Tensor:
    """Intrinsics of the same camera at ``scale`` times the resolution (K maps to continuous pixel coordinates,
    which scale with the image; rays go through pixel centres ``u + 0.5``)."""
    K = K.clone()
    K[:2] *= scale
    return K


CPU_CHUNK = 8192  # rays per head evaluation on CPU (bounds memory); on CUDA a frame is one chunk


@torch.no_grad()
def render_frame(head: HeadRepresentation, torso: TorsoModel | None, inputs: FrameInputs, K: Tensor, width: int,
                 height: int, behind: Tensor, chunk: int | None = None, early_stop_eps: float = 1e-3) -> FrameOutput:
    """Render a ``width`` x ``height`` image.

    Args:
        head, torso: trained models (``torso`` None: the head alone over ``behind``).
        inputs: :class:`FrameInputs`.
        K: [3, 3] intrinsics at this resolution (:func:`scaled_intrinsics`).
        behind: [H*W, 3] or [3] in [0, 1]: the background plate with a torso model, else what shows through the
            head (e.g. a frame's torso plate).
        chunk: pixels per head evaluation (bounds memory); None: the whole frame on CUDA, ``CPU_CHUNK`` elsewhere.
        early_stop_eps: transmittance at which rays stop (see ``HeadModel.render``).
    """
    from synctalk.render.rays import pixel_grid

    device = inputs.c2w.device
    if chunk is None:
        chunk = None if device.type == "cuda" else CPU_CHUNK
    out = head.render_image(inputs.c2w, K, width, height, inputs.audio_code, inputs.expression,
                            appearance_frame=inputs.appearance_frame, chunk=chunk, early_stop_eps=early_stop_eps)
    n = width * height
    behind = behind.reshape(-1, 3) if behind.numel() > 3 else behind.reshape(1, 3).expand(n, 3)
    torso_alpha = None
    if torso is not None:
        coords = normalize_pixels(pixel_grid(width, height, device=device), width, height)
        body = torso.render(coords, inputs.torso_pose, frame_indices=inputs.appearance_frame,
                            track=inputs.torso_track)
        torso_alpha = body["alpha"].reshape(height, width)
        rgb = composite_layers(out["rgb"], out["opacity"], body["rgb"], body["alpha"], behind)
    else:
        rgb = out["rgb"] + (1 - out["opacity"])[:, None] * behind
    return FrameOutput(rgb=rgb.reshape(height, width, 3), head_alpha=out["opacity"].reshape(height, width),
                       torso_alpha=torso_alpha,
                       maps={name: out[name].reshape(height, width) for name in HEAD_MAPS})
