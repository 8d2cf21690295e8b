"""The Gaussian head: starts from its canonical Gaussians, renders crops like the whole image, trains every
parameter, relocates transparent Gaussians, and round-trips through its state dict; seeds land on the head."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import build_subject, requires_cuda

from synctalk.models.gaussian import GaussianHead, GaussianHeadSettings

DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]
EXPRESSIONS = ("eyeBlinkLeft", "eyeBlinkRight")


def _head(device="cpu", count=300, mouth_count=30, seed=0) -> GaussianHead:
    torch.manual_seed(seed)
    settings = GaussianHeadSettings(count=count, mouth_count=mouth_count, levels=2, base=8, finest=32, table_log2=10,
                                    hidden=16, audio_window=2, audio_hidden=16, expression_names=EXPRESSIONS,
                                    relocate_every=10, relocate_until=100)
    head = GaussianHead(settings, audio_feature_shape=(6,), n_frames=4).to(device)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():   # a blob of Gaussians about the origin, in front of a camera at z = -3
        head.face.means.copy_(0.5 * torch.randn(count, 3, generator=g))
        head.face.log_scales.fill_(math.log(0.08))
        head.face.opacity_logits.fill_(1.0)
        head.face.sh.normal_(0, 0.5, generator=g)
        head.mouth.means.copy_(0.2 * torch.randn(mouth_count, 3, generator=g) + torch.tensor([0.0, 0.4, -0.2]))
        head.mouth.log_scales.fill_(math.log(0.05))
        head.mouth.opacity_logits.fill_(0.0)
    return head.to(device)


def _camera(device, size=24):
    c2w = torch.eye(4, device=device)
    c2w[2, 3] = -3.0
    K = torch.tensor([[0.8 * size, 0, size / 2], [0, 0.8 * size, size / 2], [0, 0, 1]], device=device)
    return c2w, K


def _inputs(head, device):
    features = torch.randn(4, 6, device=device)
    return head.encode_audio(features, 1), torch.tensor([0.3, 0.1], device=device)


@pytest.mark.parametrize("device", DEVICES)
def test_training_starts_from_the_canonical_gaussians(device):
    head = _head(device)
    code, expression = _inputs(head, device)
    deformed = head.deform(code, expression)
    torch.testing.assert_close(deformed["means"], head.face.means)
    torch.testing.assert_close(deformed["scales"], head.face.log_scales.exp())
    torch.testing.assert_close(deformed["mouth_means"], head.mouth.means)
    assert deformed["audio_attention"].shape == (head.settings.count,)


@pytest.mark.parametrize("device", DEVICES)
def test_pixels_of_any_crop_match_the_whole_image(device):
    """render_pixels splats each camera's bounding box of the pixels: the same colours as the whole image, for
    random pixels, for two cameras' pixels side by side (a training batch), with a background."""
    head = _head(device).eval()
    c2w, K = _camera(device)
    code, expression = _inputs(head, device)
    with torch.no_grad():
        whole = head.render_image(c2w, K, 24, 24, code, expression, appearance_frame=2)
        g = torch.Generator().manual_seed(1)
        pixels = torch.stack([torch.randint(3, 20, (40,), generator=g), torch.randint(5, 17, (40,), generator=g)],
                             1).to(device)
        out = head.render_pixels(c2w, K, pixels, code, expression, appearance_frames=2)
        flat = pixels[:, 1] * 24 + pixels[:, 0]
        for name in ("rgb", "opacity", "audio_attention", "expression_attention"):
            torch.testing.assert_close(out[name], whole[name][flat], atol=2e-5, rtol=1e-4)

        c2w_b = c2w.clone()
        c2w_b[0, 3] = 0.3
        other = head.render_image(c2w_b, K, 24, 24, code, expression, appearance_frame=3)
        cams = torch.stack([c2w] * 40 + [c2w_b] * 40)
        frames = torch.tensor([2] * 40 + [3] * 40, device=device)
        background = torch.tensor([0.2, 0.5, 0.9], device=device)
        both = head.render_pixels(cams, K, torch.cat([pixels, pixels]), code, expression, appearance_frames=frames,
                                  background=background)
        expected = torch.cat([whole["rgb"][flat] + (1 - whole["opacity"][flat, None]) * background,
                              other["rgb"][flat] + (1 - other["opacity"][flat, None]) * background])
        torch.testing.assert_close(both["rgb"], expected, atol=2e-5, rtol=1e-4)
    assert whole["opacity"].max() > 0.5 and whole["opacity"].min() < 0.05   # the blob covers part of the view


@pytest.mark.parametrize("device", DEVICES)
def test_a_step_trains_every_parameter(device):
    """After one optimiser step (the deformation's last layer leaves zero), a second backward reaches the per-
    Gaussian tensors of both sets, the deformation and mouth networks, the hash grid, the audio net and the
    appearance codes."""
    head = _head(device)
    c2w, K = _camera(device)
    features = torch.randn(4, 6, device=device)
    expression = torch.tensor([0.3, 0.1], device=device)
    target = torch.rand(24, 24, 3, device=device)
    optimizer = torch.optim.Adam(head.param_groups(1e-2, 1e-2))
    for _ in range(2):
        optimizer.zero_grad()
        out = head.splat(c2w, K, 24, 24, head.encode_audio(features, 1), expression, appearance_frame=1)
        ((out["rgb"] - target) ** 2).mean().backward()
        optimizer.step()
    names = [name for name, p in head.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert names == []
    assert {g["name"] for g in head.param_groups(1, 1)} >= {"means", "scales", "quats", "opacity", "sh", "grid",
                                                            "mlp", "mouth_means", "mouth_sh"}


def test_every_parameter_is_in_exactly_one_group():
    head = _head()
    grouped = [id(p) for g in head.param_groups(1e-2, 1e-3) for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in head.parameters())


def test_relocation_moves_transparent_gaussians_onto_visible_ones_and_resets_their_moments():
    head = _head(count=200)
    optimizer = torch.optim.Adam(head.param_groups(1e-2, 1e-3))
    c2w, K = _camera("cpu")
    code, expression = _inputs(head, "cpu")
    ((head.splat(c2w, K, 24, 24, code, expression)["rgb"]) ** 2).mean().backward()
    optimizer.step()
    with torch.no_grad():
        head.face.opacity_logits[:50] = -10.0
    before = head.face.means.detach().clone()
    opacity_before = torch.sigmoid(head.face.opacity_logits.detach()).clone()
    head.after_step(5, None, optimizer)                       # not a relocation step
    assert torch.equal(head.face.means, before)
    head.after_step(10, None, optimizer)
    moved = (head.face.means != before).any(1)
    assert moved[:50].all() and not moved[50:].any()
    opacity = torch.sigmoid(head.face.opacity_logits.detach())
    assert opacity.min() > head.settings.min_opacity
    assert opacity[50:].max() <= opacity_before[50:].max() + 1e-6   # sources share their opacity with copies
    assert (optimizer.state[head.face.means]["exp_avg"][:50] == 0).all()
    assert (optimizer.state[head.face.means]["exp_avg"][50:] != 0).any()
    head.after_step(110, None, optimizer)                     # past relocate_until: nothing moves
    with torch.no_grad():
        head.face.opacity_logits[:10] = -10.0
    settled = head.face.means.detach().clone()
    head.after_step(110, None, optimizer)
    assert torch.equal(head.face.means, settled)


def test_state_dict_round_trip_renders_the_same():
    head = _head(seed=0).eval()
    copy = _head(seed=1).eval()
    copy.load_state_dict(head.state_dict())
    c2w, K = _camera("cpu")
    code, expression = _inputs(head, "cpu")
    with torch.no_grad():
        a = head.render_image(c2w, K, 24, 24, code, expression)
        copy.render_image(c2w, K, 24, 24, code, expression)        # fills the frozen feature cache ...
        with torch.no_grad():
            copy.face.means.add_(0.1)                               # ... which a change of the centres invalidates
        copy.load_state_dict(head.state_dict())
        b = copy.render_image(c2w, K, 24, 24, code, expression)
    torch.testing.assert_close(a["rgb"], b["rgb"])


def _disc_subject(root, n_frames=12, side=64):
    """A subject whose head is a ball of radius 1 at the origin, seen from z = -4 by cameras turning about it:
    head masks are the projected discs, frames are red inside them."""
    from synctalk.data import SubjectWriter

    root = build_subject(root, n_frames=n_frames, size=(side, side))
    writer = SubjectWriter(root)
    focal = side * 1.5
    poses = []
    for i in range(n_frames):
        angle = math.radians(-15 + 30 * i / (n_frames - 1))
        c, s = math.cos(angle), math.sin(angle)
        c2w = np.eye(4)
        c2w[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
        c2w[:3, 3] = c2w[:3, :3] @ np.array([0.0, 0.0, -4.0])
        poses.append(c2w)
        ys, xs = np.mgrid[:side, :side] + 0.5
        radius = focal / math.sqrt(15.0)    # the ball's outline: tangent rays at distance 4
        disc = (xs - side / 2) ** 2 + (ys - side / 2) ** 2 <= radius ** 2
        writer.write_frame("parsing", i, np.where(disc, 1, 0).astype(np.uint8))
        image = np.zeros((side, side, 3), np.uint8)
        image[disc] = (200, 30, 30)
        writer.write_frame("gt", i, image)
    writer.save_array("poses.npy", np.asarray(poses, np.float32))
    landmarks = np.zeros((n_frames, 478, 3), np.float32)
    landmarks[:, :, :2] = side / 2
    landmarks[:, 78, 0], landmarks[:, 308, 0] = side / 2 - 6, side / 2 + 6      # mouth corners
    writer.save_array("landmarks.npy", landmarks)
    writer.write_json("intrinsics.json", {"fx": focal, "fy": focal, "cx": side / 2, "cy": side / 2,
                                          "width": side, "height": side})
    return root


def test_seeds_cover_the_head_of_a_subject(tmp_path):
    """Without the face mesh: the seeds lie on the surface of the head's visual hull (a ball of radius 1 here),
    inside the box, take the frames' colour, and the mouth seeds sit where the lips' landmarks look."""
    from synctalk.data import SubjectDataset
    from synctalk.models.gaussian_init import seed_points

    ds = SubjectDataset(_disc_subject(tmp_path / "subject"))
    box = (-1.3, -1.3, -1.3, 1.3, 1.3, 1.3)
    seeds = seed_points(ds, box, count=500, mouth_count=50, face=None)
    assert seeds.head.shape == (500, 3) and seeds.mouth.shape == (50, 3)
    radius = np.linalg.norm(seeds.head, axis=1)
    # frontal views carve a cylinder-like hull: its surface runs from the ball's front to the box's back
    assert np.all(radius > 0.8) and np.all(np.abs(seeds.head) <= 1.3 + 0.05)
    np.testing.assert_allclose(np.median(seeds.head_rgb, axis=0), [200 / 255, 30 / 255, 30 / 255], atol=0.02)
    centre = seeds.mouth.mean(0)
    assert np.abs(centre[:2]).max() < 0.1 and -0.5 < centre[2] < 0.0
