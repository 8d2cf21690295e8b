"""One full image from the trained models: the head field over the torso model over the background plate.

Training (validation renders), `synctalk render` and `synctalk stream` all draw frames through
:func:`render_frame`, so what is evaluated is what users get.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from synctalk.models.head import HeadModel
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


@torch.no_grad()
def render_frame(head: HeadModel, torso: TorsoModel | None, inputs: FrameInputs, K: Tensor, width: int,
                 height: int, behind: Tensor, chunk: int = 8192, early_stop_eps: float = 1e-3) -> FrameOutput:
    """Render a ``width`` x ``height`` image.

    Args:
        head, torso: trained models (``torso`` None: the head alone over ``behind``).
        inputs: :class:`FrameInputs`.
        K: [3, 3] intrinsics at this resolution (:func:`scaled_intrinsics`).
        behind: [H*W, 3] or [3] in [0, 1]: the background plate with a torso model, else what shows through the
            head (e.g. a frame's torso plate).
        chunk: rays per field evaluation (bounds memory).
        early_stop_eps: transmittance at which rays stop (see ``HeadModel.render``).
    """
    from synctalk.render.rays import generate_rays, pixel_grid

    device = inputs.c2w.device
    pixels = pixel_grid(width, height, device=device)
    rays_o, rays_d = generate_rays(inputs.c2w, K, pixels)
    behind = behind.reshape(-1, 3) if behind.numel() > 3 else behind.reshape(1, 3).expand(len(pixels), 3)
    rows, head_alpha, torso_alpha = [], [], []
    maps: dict[str, list[Tensor]] = {name: [] for name in HEAD_MAPS}
    for start in range(0, len(pixels), chunk):
        sl = slice(start, start + chunk)
        out = head.render(rays_o[sl], rays_d[sl], inputs.audio_code, inputs.expression,
                          frame_indices=inputs.appearance_frame, background=None, early_stop_eps=early_stop_eps)
        for name in HEAD_MAPS:
            maps[name].append(out[name])
        head_alpha.append(out["opacity"])
        if torso is not None:
            coords = normalize_pixels(pixels[sl], width, height)
            body = torso.render(coords, inputs.torso_pose, frame_indices=inputs.appearance_frame,
                                track=inputs.torso_track)
            torso_alpha.append(body["alpha"])
            rows.append(composite_layers(out["rgb"], out["opacity"], body["rgb"], body["alpha"], behind[sl]))
        else:
            rows.append(out["rgb"] + (1 - out["opacity"])[:, None] * behind[sl])
    return FrameOutput(rgb=torch.cat(rows).reshape(height, width, 3),
                       head_alpha=torch.cat(head_alpha).reshape(height, width),
                       torso_alpha=torch.cat(torso_alpha).reshape(height, width) if torso is not None else None,
                       maps={name: torch.cat(v).reshape(height, width) for name, v in maps.items()})
