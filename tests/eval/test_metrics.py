"""synctalk.eval.metrics: hand-computed values for the image, landmark and blendshape metrics, plus real frames."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import real_file

from synctalk.eval import metrics
from synctalk.eval.metrics import (
    Skipped,
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

C1 = 0.01 ** 2
CONSTANT_SSIM = (2 * 0.6 * 0.5 + C1) / (0.6 ** 2 + 0.5 ** 2 + C1)  # constant images 0.6 vs 0.5: cs = 1


def constant(value: float, size: int) -> np.ndarray:
    return np.full((size, size, 3), value)


def noisy(image: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    return np.clip(image + np.random.default_rng(seed).normal(0, sigma, image.shape), 0, 1)


@pytest.fixture(scope="module")
def textured():
    """A smooth-plus-detail float image in [0, 1], 192 × 192 (5 MS-SSIM scales)."""
    y, x = np.mgrid[0:192, 0:192] / 192.0
    base = 0.5 + 0.25 * np.sin(8 * x)[..., None] * np.cos(5 * y)[..., None] * np.array([1.0, 0.8, 0.6])
    return np.clip(base + np.random.default_rng(0).uniform(-0.1, 0.1, base.shape), 0, 1)


# ------------------------------------------------------------------------------------------ images
def test_identical_images_score_perfectly(textured):
    as_uint8 = (textured * 255).round().astype(np.uint8)
    for image in (textured, as_uint8, textured[:64, :64]):
        assert psnr(image, image) == math.inf
        assert ssim(image, image) == pytest.approx(1.0, abs=1e-12)
        assert ms_ssim(image, image) == pytest.approx(1.0, abs=1e-12)


def test_uniform_offset_of_a_tenth_is_20_db(textured):
    gt = textured * 0.8  # room for +0.1 without clipping
    assert psnr(gt + 0.1, gt) == pytest.approx(20.0, abs=1e-9)
    assert psnr(constant(0.6, 8), constant(0.5, 8)) == pytest.approx(20.0, abs=1e-9)
    # uint8 is divided by 255: an offset of 51 levels is 0.2 → 10 log10(1 / 0.04) = 13.979 dB
    a = np.full((4, 4, 3), 100, np.uint8)
    assert psnr(a + 51, a) == pytest.approx(10 * math.log10(1 / 0.04), abs=1e-9)


def test_ssim_of_constant_images_is_the_luminance_term():
    assert ssim(constant(0.6, 32), constant(0.5, 32)) == pytest.approx(CONSTANT_SSIM, abs=1e-12)


def test_ssim_matches_scikit_image(textured):
    structural_similarity = pytest.importorskip("skimage.metrics").structural_similarity
    pred = noisy(textured, 0.1)
    expected = structural_similarity(pred, textured, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     data_range=1.0, channel_axis=2)
    assert ssim(pred, textured) == pytest.approx(expected, abs=1e-9)


def test_ssim_and_ms_ssim_decrease_with_noise(textured):
    for metric in (ssim, ms_ssim):
        scores = [metric(noisy(textured, sigma), textured) for sigma in (0.02, 0.05, 0.15)]
        assert 1.0 > scores[0] > scores[1] > scores[2] > 0.0, (metric.__name__, scores)


def test_ms_ssim_of_constant_images_uses_the_coarsest_weight():
    # cs = 1 at every scale, so only the coarsest scale's SSIM (= CONSTANT_SSIM) with its weight remains.
    assert ms_ssim(constant(0.6, 176), constant(0.5, 176)) == pytest.approx(CONSTANT_SSIM ** 0.1333, abs=1e-12)
    # 64 × 64: 3 scales (64, 32, 16), weights renormalised over the first three
    expected = CONSTANT_SSIM ** (0.3001 / (0.0448 + 0.2856 + 0.3001))
    assert ms_ssim(constant(0.6, 64), constant(0.5, 64)) == pytest.approx(expected, abs=1e-12)


def test_ms_ssim_on_small_images_uses_fewer_scales(textured):
    assert [metrics._n_scales(s, s) for s in (11, 21, 22, 43, 44, 64, 87, 88, 175, 176, 512)] == \
        [1, 1, 2, 2, 3, 3, 3, 4, 4, 5, 5]
    assert metrics._n_scales(64, 300) == 3  # the smaller side decides
    small, small_pred = textured[:64, :64], noisy(textured[:64, :64], 0.05)
    score = ms_ssim(small_pred, small)
    assert 0.5 < score < 1.0
    tiny, tiny_pred = textured[:16, :16], noisy(textured[:16, :16], 0.05)
    assert ms_ssim(tiny_pred, tiny) == pytest.approx(ssim(tiny_pred, tiny), abs=1e-12)  # one scale = SSIM
    with pytest.raises(ValueError, match="at least 11"):
        ms_ssim(textured[:8, :8], textured[:8, :8])


def test_image_inputs_are_checked(textured):
    with pytest.raises(ValueError, match="same shape"):
        psnr(textured, textured[:100])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        psnr(textured * 255, textured * 255)
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        psnr(np.zeros((2, 3, 4, 4)), np.zeros((2, 3, 4, 4)))


def test_mean_image_baseline_hand_values():
    train = [constant(0.2, 4), constant(0.4, 4)]  # mean 0.3
    val = [constant(0.4, 4), constant(0.1, 4)]    # MSE 0.01 → 20 dB, MSE 0.04 → 13.979 dB
    expected = (20.0 + 10 * math.log10(1 / 0.04)) / 2
    assert mean_image_baseline(iter(train), iter(val)) == pytest.approx(expected, abs=1e-9)


# ------------------------------------------------------------------------------------------ landmarks
LOWER_LIP = (146, 91, 181, 84, 17, 314, 405, 321, 375, 95, 88, 178, 87, 14, 317, 402, 318, 324)  # corners excluded


def test_mouth_landmarks_are_the_face_mesh_lip_contours():
    mouth = metrics.MOUTH_LANDMARKS
    assert len(mouth) == 40 and len(set(mouth)) == 40 and list(mouth) == sorted(mouth)
    assert {0, 17, 13, 14, 61, 291, 78, 308} <= set(mouth)  # lip middles (outer, inner) and corners
    assert set(LOWER_LIP) <= set(mouth) and max(mouth) < 478


def mouth_on_circle(n_frames: int = 3, radius: float = 10.0) -> np.ndarray:
    """[N, 478, 3] landmarks with the 40 mouth points on a circle of `radius` around (200, 300)."""
    landmarks = np.random.default_rng(0).uniform(0, 512, (n_frames, 478, 3))
    angles = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    circle = np.stack([200 + radius * np.cos(angles), 300 + radius * np.sin(angles)], -1)
    landmarks[:, list(metrics.MOUTH_LANDMARKS), :2] = circle
    return landmarks


def test_lmd_identical_and_translated():
    gt = mouth_on_circle()
    assert lmd(gt, gt) == 0.0
    moved = gt.copy()
    moved[..., :2] += (3.0, 4.0)
    assert lmd(moved, gt) == pytest.approx(0.0, abs=1e-12)           # mean-centred
    assert lmd(moved, gt, centred=False) == pytest.approx(5.0, abs=1e-12)


def test_lmd_of_a_scaled_circle():
    gt = mouth_on_circle(radius=10.0)
    scaled = gt * 1.5  # about the origin: a translation (gone after centring) plus radius 10 → 15
    assert lmd(scaled, gt) == pytest.approx(5.0, abs=1e-9)
    square = np.array([[[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]]])
    assert lmd(square * 2, square, indices=range(4)) == pytest.approx(math.sqrt(2), abs=1e-12)


def test_lmd_of_a_lower_lip_shift():
    gt = mouth_on_circle()
    open_mouth = gt.copy()
    open_mouth[:, list(LOWER_LIP), 1] += 5.0
    # k = 18 of P = 40 points move by d = 5; the mean moves d k / P = 2.25, so the moved points are off by
    # 2.75 and the others by 2.25 after centring: (18 · 2.75 + 22 · 2.25) / 40 = 2.475
    assert lmd(open_mouth, gt) == pytest.approx(2.475, abs=1e-9)
    assert lmd(open_mouth, gt, centred=False) == pytest.approx(5.0 * 18 / 40, abs=1e-9)
    # only the frames given as valid count; frames with NaN must be excluded
    open_mouth[1] = np.nan
    with pytest.raises(ValueError, match="valid"):
        lmd(open_mouth, gt)
    assert lmd(open_mouth, gt, valid=np.array([True, False, True])) == pytest.approx(2.475, abs=1e-9)


@pytest.fixture(scope="module")
def macron_frames():
    from synctalk.io.media import read_frames

    video = real_file("video/macron_fr_50s_30fps.mp4")
    model = real_file("models/face_landmarker.task")
    frames = list(read_frames(video, max_frames=3))
    return frames, model


def test_landmarks_of_real_frames(macron_frames):
    frames, model = macron_frames
    landmarks, found, blendshapes = landmarks_of_frames(frames, fps=30.0, model_path=model)
    assert landmarks.shape == (3, 478, 2) and blendshapes.shape == (3, 52) and found.tolist() == [True] * 3
    height, width = frames[0].shape[:2]
    mouth = landmarks[:, list(metrics.MOUTH_LANDMARKS)]
    assert (mouth[..., 0] > 0).all() and (mouth[..., 0] < width).all() and (mouth[..., 1] < height).all()
    assert lmd(landmarks, landmarks) == 0.0

    shifted, found_shifted, blend_shifted = landmarks_of_frames([np.roll(f, 5, axis=1) for f in frames], fps=30.0,
                                                                model_path=model)
    assert found_shifted.all()
    assert lmd(shifted, landmarks) < 1.0                                 # mean-centred: the shift cancels
    assert lmd(shifted, landmarks, centred=False) == pytest.approx(5.0, abs=1.0)
    errors = blendshape_error(blend_shifted, blendshapes)
    assert errors["upper_face"] < 0.05 and errors["lower_face"] < 0.05  # same face, same expression


def test_landmarks_of_no_frames():
    landmarks, found, blendshapes = landmarks_of_frames([], fps=25.0, model_path=real_file(
        "models/face_landmarker.task"))
    assert landmarks.shape == (0, 478, 2) and found.shape == (0,) and blendshapes.shape == (0, 52)


# ------------------------------------------------------------------------------------------ blendshapes
def test_blendshape_error_hand_values():
    names = ("browDownLeft", "eyeBlinkLeft", "jawOpen", "mouthClose", "noseSneerLeft")
    pred = np.array([[0.5, 0.2, 0.8, 0.0, 1.0], [0.5, 0.2, 0.8, 0.0, 1.0]])
    gt = np.array([[0.3, 0.2, 0.2, 0.1, 0.0], [0.3, 0.6, 0.2, 0.1, 0.0]])
    errors = blendshape_error(pred, gt, names)
    assert errors["upper_face"] == pytest.approx((0.2 + 0.0 + 0.2 + 0.4) / 4, abs=1e-12)
    assert errors["lower_face"] == pytest.approx((0.6 + 0.1) / 2, abs=1e-12)  # noseSneer in neither group
    assert set(errors) == {"upper_face", "lower_face"}


def test_blendshape_error_with_the_contract_names():
    from synctalk.data.contract import BLENDSHAPE_NAMES

    gt = np.zeros(52)
    pred = np.array([0.5 if n.startswith(("jaw", "mouth", "cheek")) else 0.0 for n in BLENDSHAPE_NAMES])
    assert blendshape_error(pred, gt) == {"upper_face": 0.0, "lower_face": 0.5}
    pred = np.array([1.0 if n.startswith("eyeBlink") else 0.0 for n in BLENDSHAPE_NAMES])
    n_upper = sum(n.startswith(("brow", "eye")) for n in BLENDSHAPE_NAMES)  # 5 brow + 14 eye
    assert n_upper == 19
    assert blendshape_error(pred, gt)["upper_face"] == pytest.approx(2 / 19, abs=1e-12)
    with pytest.raises(ValueError, match="52"):
        blendshape_error(np.zeros(51), np.zeros(51))


# ------------------------------------------------------------------------------------------ learned metrics
def test_fid_is_reported_as_skipped_with_the_reason():
    result = fid_metric()
    assert isinstance(result, Skipped)
    assert result.reason.startswith("FID skipped") and "does not compute" in result.reason


def test_lpips_metric_scores_uint8_frames_when_the_weights_are_there():
    real_file("models/lpips_alex.pt")
    score = lpips_metric()
    image = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    assert score(image, image) == 0.0
    assert score(image, np.ascontiguousarray(image[::-1])) > score(image, np.clip(image + 8, 0, 255))
    with pytest.raises(ValueError, match="same shape"):
        score(image, image[:32])


def test_face_box_is_square_with_a_margin_and_inside_the_image():
    from synctalk.eval.metrics import face_box

    landmarks = np.array([[10, 20], [30, 30], [20, 25.0]])
    assert face_box(landmarks, (64, 64)) == (slice(13, 37), slice(8, 32))
    # near the corner: moved inside; bigger than the image: cut to its short side
    assert face_box(landmarks - 15, (64, 64)) == (slice(0, 24), slice(0, 24))
    assert face_box(landmarks * 4, (64, 80)) == (slice(0, 64), slice(16, 80))
