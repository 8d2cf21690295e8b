"""Dynamic Portrait Renderer networks: one recipe per model (networks + sampler + renderer), and their losses.

- :mod:`~synctalk.models.audio_net`: :class:`AudioNet` (per-frame encoder + temporal attention),
  :func:`feature_windows`.
- :mod:`~synctalk.models.head`: :class:`HeadField` (tri-plane hash field with audio and expression attention) and
  :class:`HeadModel` (audio net + field + occupancy grid + appearance codes, rendered through synctalk.render).
- :mod:`~synctalk.models.torso`: :class:`TorsoModel` (2D deformation + 2D grids), :func:`composite_layers`.
- :mod:`~synctalk.models.losses`: uncertainty-weighted L1, opacity entropy, masked attention, SSIM / gradient.

Imports torch (models are only imported by train/eval/render code, never at CLI start).
"""

from synctalk.models.audio_net import AudioNet, feature_windows
from synctalk.models.head import (
    HeadField,
    HeadFieldConfig,
    HeadModel,
    HeadModelConfig,
    expression_from_blendshapes,
)
from synctalk.models.losses import HeadLossWeights, head_losses
from synctalk.models.torso import TorsoConfig, TorsoModel, composite_layers, normalize_pixels, pose_vector

__all__ = [
    "AudioNet",
    "HeadField",
    "HeadFieldConfig",
    "HeadLossWeights",
    "HeadModel",
    "HeadModelConfig",
    "TorsoConfig",
    "TorsoModel",
    "composite_layers",
    "expression_from_blendshapes",
    "feature_windows",
    "head_losses",
    "normalize_pixels",
    "pose_vector",
]
