"""The head interface and the `model.head` registry: the NeRF head is built from its own config section and
renders through the interface exactly as through its own ray API."""

from __future__ import annotations

import pytest
import torch

from synctalk.config import ModelConfig, NerfHeadConfig, SyncTalkConfig
from synctalk.errors import ConfigError
from synctalk.models.base import HeadRepresentation, HeadSpec, PixelRegions
from synctalk.models.registry import HEADS, build_models, head_class, subject_spec


def small_config() -> SyncTalkConfig:
    nerf = NerfHeadConfig(levels=2, base=8, finest=32, hidden=16, grid_resolution=16, max_steps=32)
    return SyncTalkConfig(model=ModelConfig(nerf=nerf))


def test_every_registered_head_implements_the_interface():
    for name in HEADS:
        cls = head_class(name)
        assert issubclass(cls, HeadRepresentation) and cls.name == name
        assert hasattr(ModelConfig(), name), f"model.{name} config section missing"
    with pytest.raises(ConfigError, match="unknown head representation model.head='mesh'; registered: gaussian, nerf"):
        head_class("mesh")


def test_the_gaussian_head_is_built_from_model_gaussian_and_the_subject_spec():
    from synctalk.config import GaussianHeadConfig

    cfg = SyncTalkConfig(model=ModelConfig(head="gaussian", gaussian=GaussianHeadConfig(
        count=50, mouth_count=5, levels=2, base=8, finest=32, hidden=16, sh_degree=0)))
    spec = subject_spec(cfg, (16, 8), n_frames=5, box=(-1, -1.5, -1, 1, 1.2, 1))
    head, _ = build_models(cfg, spec, "cpu")
    assert head.name == "gaussian" and head.supervision == "images"
    assert head.face.means.shape == (50, 3) and head.mouth.means.shape == (5, 3) and head.face.sh.shape == (50, 1, 3)
    assert head.settings.box == (-1.0, -1.5, -1.0, 1.0, 1.2, 1.0) and head.appearance.num_embeddings == 5
    assert head.expression_names == spec.expression_names


def test_the_nerf_head_is_built_from_model_nerf_and_the_subject_spec():
    cfg = small_config()
    spec = subject_spec(cfg, (16, 8), n_frames=5, box=(-1, -1.5, -1, 1, 1.2, 1))
    head, torso = build_models(cfg, spec, "cpu")
    field = head.config.field
    assert (field.num_levels, field.base_resolution, field.finest_resolution, field.density_hidden) == (2, 8, 32, 16)
    assert head.config.grid_resolution == 16 and head.config.max_steps == 32
    assert field.aabb == (-1.0, -1.5, -1.0, 1.0, 1.2, 1.0)
    torch.testing.assert_close(head.grid.aabb.cpu(), torch.tensor([-1, -1.5, -1, 1, 1.2, 1.0]))
    assert head.expression_names == spec.expression_names and len(spec.expression_names) == 7
    assert head.appearance.num_embeddings == 5 and head.mouth_head is None
    assert HeadSpec((16, 8), 5).box == (-1.0, -1.0, -1.0, 1.0, 1.0, 1.0)  # no measured box: the default one


def test_render_pixels_and_render_image_equal_the_ray_render():
    from synctalk.render.rays import generate_rays, pixel_grid

    torch.manual_seed(0)
    cfg = small_config()
    head, _ = build_models(cfg, subject_spec(cfg, (16, 8), n_frames=3), "cpu")
    head.grid.binary.fill_(True)
    c2w = torch.eye(4)
    c2w[2, 3] = -3.0
    K = torch.tensor([[20.0, 0, 8], [0, 20.0, 6], [0, 0, 1]])
    audio, expression = torch.randn(32), torch.rand(7)
    pixels = pixel_grid(16, 12)
    rays_o, rays_d = generate_rays(c2w, K, pixels)
    want = head.render(rays_o, rays_d, audio, expression, frame_indices=1)
    got = head.render_pixels(c2w, K, pixels, audio, expression, appearance_frames=1)
    image = head.render_image(c2w, K, 16, 12, audio, expression, appearance_frame=1, chunk=50, early_stop_eps=0.0)
    for name in ("rgb", "opacity", "audio_attention", "expression_attention"):
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=0, msg=name)
        torch.testing.assert_close(image[name], want[name], rtol=0, atol=1e-6, msg=name)  # chunks: other sums
    target = torch.rand(len(pixels), 3)
    regions = PixelRegions(head=torch.rand(len(pixels)) > 0.5, lower_face=torch.rand(len(pixels)) > 0.7)
    losses = head.losses(got, target, regions, step=0, weights=None)
    assert losses and all(torch.isfinite(v) for v in losses.values())


def test_after_step_refreshes_the_occupancy_grid_on_its_period():
    cfg = small_config()
    head, _ = build_models(cfg, subject_spec(cfg, (16, 8), n_frames=3), "cpu")
    calls = []

    def conditions(k: int, seed: int):
        calls.append((k, seed))
        return torch.zeros(k, 32), torch.zeros(k, 7)

    every = head.config.grid_update_every
    head.after_step(every - 1, conditions)
    assert calls == []
    before = head.grid.density.clone()
    head.after_step(every, conditions)
    assert calls == [(8, every)] and not torch.equal(before, head.grid.density)


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_render_frame_is_the_same_in_any_chunking(device):
    """render_frame draws through the head interface; a whole-frame chunk (CUDA's default) gives the image of
    CPU-sized chunks, torso and maps included."""
    from synctalk.models.frame import FrameInputs, render_frame
    from synctalk.models.torso import pose_vector

    torch.manual_seed(0)
    cfg = small_config()
    head, torso = build_models(cfg, subject_spec(cfg, (16, 8), n_frames=3), device)
    head.grid.binary.fill_(True)
    c2w = torch.eye(4, device=device)
    c2w[2, 3] = -3.0
    K = torch.tensor([[20.0, 0, 8], [0, 20.0, 6], [0, 0, 1]], device=device)
    inputs = FrameInputs(c2w=c2w, audio_code=torch.randn(32, device=device), expression=torch.rand(7, device=device),
                         torso_pose=pose_vector(c2w), appearance_frame=1)
    behind = torch.rand(12 * 16, 3, device=device)
    whole = render_frame(head, torso, inputs, K, 16, 12, behind, chunk=16 * 12)
    for chunk in (None, 37):
        part = render_frame(head, torso, inputs, K, 16, 12, behind, chunk=chunk)
        torch.testing.assert_close(part.rgb, whole.rgb, rtol=0, atol=1e-5)
        torch.testing.assert_close(part.head_alpha, whole.head_alpha, rtol=0, atol=1e-5)
        torch.testing.assert_close(part.torso_alpha, whole.torso_alpha, rtol=0, atol=0)
        for name, value in whole.maps.items():
            torch.testing.assert_close(part.maps[name], value, rtol=0, atol=1e-5, msg=name)
    assert whole.rgb.shape == (12, 16, 3) and whole.rgb.device.type == device
