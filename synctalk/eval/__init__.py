"""Evaluation of rendered talking heads.

- :mod:`~synctalk.eval.metrics`: PSNR, SSIM, MS-SSIM, mouth landmark distance (LMD) with MediaPipe landmarks,
  blendshape error (our stand-in for AUE), the mean-training-frame baseline, and LPIPS / FID factories that report
  :class:`~synctalk.eval.metrics.Skipped` with a reason when their weights are absent.

Imports torch; mediapipe only when landmarks are needed (``MOUTH_LANDMARKS`` is resolved on first access).
"""

from synctalk.eval import metrics
from synctalk.eval.metrics import (
    MS_SSIM_WEIGHTS,
    Skipped,
    as_image,
    blendshape_error,
    fid_metric,
    landmarks_of_frames,
    lmd,
    lpips_metric,
    mean_image_baseline,
    ms_ssim,
    psnr,
    ssim,
)

__all__ = ["MOUTH_LANDMARKS", "MS_SSIM_WEIGHTS", "Skipped", "as_image", "blendshape_error", "fid_metric",
           "landmarks_of_frames", "lmd", "lpips_metric", "mean_image_baseline", "metrics", "ms_ssim", "psnr", "ssim"]


def __getattr__(name: str):
    if name == "MOUTH_LANDMARKS":
        return metrics.MOUTH_LANDMARKS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
