"""Torso: pose vector and pixel normalisation hand values, bilinear 2D grid lookup, shapes and ranges, compositing
hand values, the mean-torso prior, the torso track's coordinates against OpenCV, a tiny fit of a pose-dependent
torso edge."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from synctalk.errors import ConfigError
from synctalk.models.torso import (
    MultiResGrid2D,
    TorsoConfig,
    TorsoModel,
    apply_affine,
    composite_layers,
    invert_affine,
    normalize_pixels,
    normalized_affine,
    pixel_affine,
    pose_vector,
    torso_prior,
    warp_to_canonical,
)
from synctalk.render import pixel_grid

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_pose_vector_hand_values():
    c2w = torch.eye(4).repeat(2, 1, 1)
    c2w[0, :3, 3] = torch.tensor([0.0, 0.0, -3.0])
    # 90° about z: x → y
    c2w[1, :3, :3] = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    got = pose_vector(c2w)
    torch.testing.assert_close(got, torch.tensor([[0.0, 0, 0, 0, 0, -3], [0, 0, math.pi / 2, 0, 0, 0]]))
    torch.testing.assert_close(pose_vector(c2w[0, :3]), got[0])  # [3, 4] works too
    with pytest.raises(ValueError, match="c2w"):
        pose_vector(torch.eye(3))


def test_normalize_pixels_hand_values():
    got = normalize_pixels(torch.tensor([[0, 0], [3, 1]]), width=4, height=2)
    torch.testing.assert_close(got, torch.tensor([[-0.75, -0.5], [0.75, 0.5]]))


def test_grid_lookup_is_bilinear_with_x_along_columns():
    grid = MultiResGrid2D(num_levels=1, base_resolution=2, finest_resolution=2, features_per_level=1)
    with torch.no_grad():
        grid.grids[0].copy_(torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]]))  # rows = y, columns = x
    coords = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [0.0, 0.0], [0.5, -1.0], [5.0, 5.0]])
    # corners, centre (mean), a quarter along the top edge, outside clamps to the border
    torch.testing.assert_close(grid(coords)[:, 0], torch.tensor([0.0, 1.0, 2.0, 1.5, 0.75, 3.0]))
    multi = MultiResGrid2D(num_levels=3, base_resolution=4, finest_resolution=16, features_per_level=2)
    assert multi.resolutions == [4, 8, 16] and multi(torch.zeros(5, 2)).shape == (5, 6)


def test_render_shapes_ranges_and_zero_initial_offset():
    torch.manual_seed(0)
    model = TorsoModel(TorsoConfig(base_resolution=8, finest_resolution=32), n_frames=3)
    pixels = torch.rand(20, 2) * 2 - 1
    out = model.render(pixels, torch.randn(6), frame_indices=1)
    assert {k: tuple(v.shape) for k, v in out.items()} == {"rgb": (20, 3), "alpha": (20,), "offset": (20, 2)}
    assert bool(((out["alpha"] > 0) & (out["alpha"] < 1)).all())
    assert bool(((out["rgb"] > 0) & (out["rgb"] < 1)).all())
    # the deformation starts as the identity (zero-initialised last layer)
    assert out["offset"].abs().max().item() == 0.0
    per_ray = model.render(pixels, torch.randn(20, 6), frame_indices=torch.ones(20, dtype=torch.long))
    assert per_ray["rgb"].shape == (20, 3)
    with pytest.raises(ValueError, match="pose must be \\[6\\] or \\[R, 6\\]"):
        model.render(pixels, torch.zeros(7))
    with pytest.raises(ConfigError):
        TorsoConfig(base_resolution=64, finest_resolution=32)


def test_composite_layers_hand_values():
    head_rgb = torch.tensor([[0.3, 0.3, 0.3], [0.7, 0.1, 0.2], [0.0, 0.0, 0.0]])  # premultiplied
    head_alpha = torch.tensor([0.5, 1.0, 0.0])
    torso_rgb = torch.tensor([[1.0, 1.0, 1.0], [0.9, 0.9, 0.9], [0.4, 0.6, 0.8]])
    torso_alpha = torch.tensor([0.5, 1.0, 0.0])
    got = composite_layers(head_rgb, head_alpha, torso_rgb, torso_alpha, torch.tensor([0.2, 0.2, 0.2]))
    # 0.3 + 0.5 * (0.5 * 1 + 0.5 * 0.2) = 0.6; an opaque head hides everything; no head, no torso → background
    torch.testing.assert_close(got, torch.tensor([[0.6, 0.6, 0.6], [0.7, 0.1, 0.2], [0.2, 0.2, 0.2]]))
    with pytest.raises(ValueError, match="alphas \\[R\\]"):
        composite_layers(head_rgb, head_alpha[:, None], torso_rgb, torso_alpha, 0.0)


def test_fits_a_pose_dependent_torso_edge():
    """The torso fills the image below y = 0 at pose 0 and below y = -0.4 at pose 1 (shoulders raised)."""
    torch.manual_seed(0)
    model = TorsoModel(TorsoConfig(num_levels=2, base_resolution=8, finest_resolution=16, features_per_level=4,
                                   hidden=32, deform_hidden=32), n_frames=2)
    pixels = normalize_pixels(pixel_grid(16, 16), 16, 16)  # [256, 2]
    poses = torch.tensor([[0.0, 0, 0, 0, 0, 0], [0.0, 0, 0, 0, -0.4, 0]])
    background = torch.tensor([0.1, 0.1, 0.1])
    colour = torch.tensor([0.8, 0.3, 0.2])
    targets = [torch.where((pixels[:, 1] > edge)[:, None], colour, background) for edge in (0.0, -0.4)]
    no_head_rgb, no_head_alpha = torch.zeros(256, 3), torch.zeros(256)

    def loss_of(frame: int) -> torch.Tensor:
        out = model.render(pixels, poses[frame])  # no appearance codes: only the pose tells the frames apart
        image = composite_layers(no_head_rgb, no_head_alpha, out["rgb"], out["alpha"], background)
        return ((image - targets[frame]) ** 2).mean()

    with torch.no_grad():
        initial = float(loss_of(0) + loss_of(1))
    groups = model.param_groups(lr_grid=1e-2, lr_mlp=1e-2)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    optimizer = torch.optim.Adam(groups)
    for step in range(200):
        loss = loss_of(step % 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        final = float(loss_of(0) + loss_of(1))
    # ~0.13 → ~3e-5; with the pose zeroed the two edges cannot both be fitted and it stalls at ~0.017
    assert final < initial / 100, (initial, final)


def test_torso_prior_hand_values():
    red, blue = np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2, 3), np.uint8)
    red[..., 0], blue[..., 2] = 255, 255
    torso, other = 3, 0
    parsing_a = np.array([[other, torso], [torso, torso]])
    parsing_b = np.array([[other, other], [torso, 5]])  # 5: not a torso label
    rgb, alpha = torso_prior([(red, parsing_a), (blue, parsing_b)], (torso,))
    torch.testing.assert_close(alpha, torch.tensor([[0.0, 0.5], [1.0, 0.5]]))
    # torso pixels: red x3 (frame a), blue x1 (frame b); their mean colour (0.75, 0, 0.25) is added with weight 1
    overall = torch.tensor([0.75, 0.0, 0.25])
    torch.testing.assert_close(rgb[0, 0], overall)  # never torso: the overall mean
    torch.testing.assert_close(rgb[0, 1], (torch.tensor([1.0, 0, 0]) + overall) / 2)
    torch.testing.assert_close(rgb[1, 0], (torch.tensor([1.0, 0, 0]) + torch.tensor([0, 0, 1.0]) + overall) / 3)
    with pytest.raises(ValueError, match="at least one frame"):
        torso_prior([], (torso,))


def test_untrained_torso_renders_its_prior_and_old_checkpoints_load():
    torch.manual_seed(0)
    model = TorsoModel(TorsoConfig(base_resolution=8, finest_resolution=16, prior_resolution=4), n_frames=2)
    neutral = model.render(torch.zeros(3, 2), torch.zeros(6))
    torch.testing.assert_close(neutral["alpha"], torch.full((3,), 0.5))  # no prior: zero logits
    rgb, alpha = torch.rand(4, 4, 3) * 0.8 + 0.1, torch.rand(4, 4) * 0.8 + 0.1
    model.set_prior(rgb, alpha)
    pixels = pixel_grid(4, 4)  # (u, v) for rows of 4
    out = model.render(normalize_pixels(pixels, 4, 4), torch.randn(6), frame_indices=1)
    u, v = pixels[:, 0].long(), pixels[:, 1].long()
    torch.testing.assert_close(out["rgb"], rgb[v, u])  # each pixel centre reads its own prior cell
    torch.testing.assert_close(out["alpha"], alpha[v, u])
    model.set_prior(torch.ones(4, 4, 3), torch.zeros(4, 4))
    torch.testing.assert_close(model.render(torch.zeros(1, 2), torch.zeros(6))["alpha"], torch.tensor([0.02]))
    with pytest.raises(ValueError, match="alpha"):
        model.set_prior(rgb, alpha[:2])
    old = {k: v for k, v in model.state_dict().items() if k not in ("prior_logits", "follows_track")}
    model.load_state_dict(old)  # a checkpoint from before the prior: strict loading still works, prior neutral
    assert model.prior_logits.abs().max().item() == 0.0
    # ... and from before torso tracks: it was trained in frame coordinates, so it ignores tracks
    model.set_prior(rgb, alpha)
    shifted = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]])  # one prior cell to the right
    pixels = normalize_pixels(pixel_grid(4, 4), 4, 4)
    torch.testing.assert_close(model.render(pixels, torch.zeros(6), track=shifted)["rgb"],
                               model.render(pixels, torch.zeros(6))["rgb"])
    fresh = TorsoModel(TorsoConfig(base_resolution=8, finest_resolution=16, prior_resolution=4), n_frames=2)
    fresh.set_prior(rgb, alpha)
    assert not torch.allclose(fresh.render(pixels, torch.zeros(6), track=shifted)["rgb"],
                              fresh.render(pixels, torch.zeros(6))["rgb"])


def test_track_coordinates_agree_with_opencv():
    """A track in normalised coordinates, its OpenCV pixel form and ``warp_to_canonical`` describe the same map; the
    torso model renders its prior where the track puts it."""
    import cv2

    rng = np.random.default_rng(0)
    width, height = 16, 12
    track = np.array([[1.05, 0.04, 0.1], [-0.03, 0.97, -0.15]])
    pixels = pixel_affine(track, width, height)
    np.testing.assert_allclose(normalized_affine(pixels, width, height), track, atol=1e-12)
    # a pixel centre (x, y) in OpenCV terms is normalize_pixels' (u, v) = (x, y)
    uv = torch.tensor([[3, 4], [10, 2]])
    frame_point = apply_affine(torch.tensor(track, dtype=torch.float32), normalize_pixels(uv, width, height))
    expected = pixels[:, :2] @ uv.numpy().T.astype(float) + pixels[:, 2:]
    torch.testing.assert_close(frame_point, normalize_pixels(torch.tensor(expected.T), width, height).float())
    point, forward = torch.tensor([[0.3, -0.2]], dtype=torch.float64), torch.tensor(track)
    torch.testing.assert_close(apply_affine(invert_affine(forward), apply_affine(forward, point)), point)
    # warp_to_canonical: canonical(q) = frame(A q), i.e. OpenCV's WARP_INVERSE_MAP of the pixel matrix
    image = rng.uniform(0, 1, (height, width, 3)).astype(np.float32)
    canonical = warp_to_canonical(image, track)
    x, y = 5, 6
    sx, sy = pixels @ np.array([x, y, 1.0])
    x0, y0 = int(sx), int(sy)
    fx, fy = sx - x0, sy - y0
    bilinear = ((1 - fy) * ((1 - fx) * image[y0, x0] + fx * image[y0, x0 + 1]) +
                fy * ((1 - fx) * image[y0 + 1, x0] + fx * image[y0 + 1, x0 + 1]))
    np.testing.assert_allclose(canonical[y, x], bilinear, atol=0.02)  # OpenCV's 1/32 px interpolation steps

    # an untrained torso with a prior renders the prior moved by the track: frame(p) = prior(A^-1 p)
    model = TorsoModel(TorsoConfig(base_resolution=8, finest_resolution=16, prior_resolution=16), n_frames=1)
    prior = np.zeros((16, 16, 3), np.float32)
    prior[6:11, 4:12] = 0.9  # a bright block
    model.set_prior(torch.tensor(prior) + 0.05, torch.full((16, 16), 0.5))
    shift = np.array([[1.0, 0.0, 0.25], [0.0, 1.0, -0.125]])  # 2 px right, 1 px up at 16 px
    grid = pixel_grid(16, 16)
    out = model.render(normalize_pixels(grid, 16, 16), torch.zeros(6), track=torch.tensor(shift, dtype=torch.float32))
    rendered = out["rgb"].detach().reshape(16, 16, 3).numpy()
    expected = cv2.warpAffine(prior + 0.05, pixel_affine(shift, 16, 16), (16, 16), borderMode=cv2.BORDER_REPLICATE)
    np.testing.assert_allclose(rendered, np.clip(expected, 0.02, 0.98), atol=1e-4)
    assert rendered[5:10, 6:14].min() > 0.9 and rendered[10, 6:14].max() < 0.1  # the block moved up and right
    identity = model.render(normalize_pixels(grid, 16, 16), torch.zeros(6), track=torch.eye(2, 3))
    torch.testing.assert_close(identity["rgb"], model.render(normalize_pixels(grid, 16, 16), torch.zeros(6))["rgb"])
    with pytest.raises(ValueError, match="track must be"):
        model.render(torch.zeros(3, 2), torch.zeros(6), track=torch.eye(2, 3).repeat(2, 1, 1))
