"""HeadField and HeadModel: expression columns, shapes and ranges, gradient flow, audio only through its attention,
layouts (shared vs per-ray codes), parameter groups, a tiny overfit and early termination on a trained model."""

from __future__ import annotations

import math

import pytest
import torch

from synctalk.data.contract import BLENDSHAPE_NAMES
from synctalk.errors import ConfigError
from synctalk.models.head import (
    HeadField,
    HeadFieldConfig,
    HeadModel,
    HeadModelConfig,
    expression_from_blendshapes,
    trunc_exp,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_field(**overrides) -> HeadFieldConfig:
    sizes = dict(num_levels=4, base_resolution=8, finest_resolution=32, log2_table_size=10, attention_hidden=16,
                 density_hidden=32, density_layers=2, geo_feat_dim=8, color_hidden=32, uncertainty_hidden=16,
                 sh_degree=2)
    sizes.update(overrides)
    return HeadFieldConfig(**sizes)


def random_inputs(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    points = torch.rand(n, 3, generator=g) * 1.6 - 0.8
    dirs = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    return points, dirs, torch.randn(32, generator=g), torch.rand(7, generator=g), torch.randn(4, generator=g)


def randomize_grid(field: HeadField, scale: float = 0.5, seed: int = 0) -> None:
    # the Instant-NGP init (±1e-4) makes the code nearly constant; spread it so attention varies over space
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        field.encoding.embeddings.copy_((torch.rand(field.encoding.embeddings.shape, generator=g) * 2 - 1) * scale)


# --------------------------------------------------------------------------------------------------- expression


def test_expression_from_blendshapes_picks_the_named_columns():
    blendshapes = torch.arange(52, dtype=torch.float32).expand(3, 52)
    got = expression_from_blendshapes(blendshapes)
    # browDownLeft .. browOuterUpRight are columns 1-5, eyeBlinkLeft/Right 9 and 10 (MediaPipe order)
    torch.testing.assert_close(got, torch.tensor([1.0, 2, 3, 4, 5, 9, 10]).expand(3, 7))
    assert expression_from_blendshapes(blendshapes[0], ("jawOpen", "_neutral")).tolist() == [25.0, 0.0]
    assert BLENDSHAPE_NAMES[25] == "jawOpen"


def test_expression_from_blendshapes_rejects_unknown_names_and_shapes():
    with pytest.raises(ConfigError, match="unknown blendshape name 'eyeBlinkLeftt'.*did you mean 'eyeBlinkLeft'"):
        expression_from_blendshapes(torch.zeros(52), ("eyeBlinkLeftt",))
    with pytest.raises(ValueError, match="\\[..., 52\\]"):
        expression_from_blendshapes(torch.zeros(4, 51))


def test_config_checks():
    with pytest.raises(ConfigError, match="expression_dim is 3 but expression_names has 7"):
        HeadFieldConfig(expression_dim=3)
    with pytest.raises(ConfigError, match="density_activation"):
        HeadFieldConfig(density_activation="relu")
    with pytest.raises(ConfigError, match="aabb"):
        HeadFieldConfig(aabb=(0, 0, 0, 1, -1, 1))


def test_trunc_exp_clamps_only_the_gradient():
    x = torch.tensor([0.0, 1.0, 20.0], dtype=torch.float64, requires_grad=True)
    y = trunc_exp(x)
    torch.testing.assert_close(y, torch.exp(x.detach()))
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([1.0, math.e, math.exp(15.0)], dtype=torch.float64))


# -------------------------------------------------------------------------------------------------------- field


@pytest.mark.parametrize("activation", ["trunc_exp", "softplus"])
def test_field_shapes_ranges_and_density(activation):
    torch.manual_seed(0)
    field = HeadField(tiny_field(density_activation=activation))
    randomize_grid(field)
    points, dirs, audio, expression, appearance = random_inputs(50)
    out = field(points, dirs, audio, expression, appearance)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "sigma": (50,), "rgb": (50, 3), "uncertainty": (50,), "audio_attention": (50,),
        "expression_attention": (50,)}
    assert bool((out["sigma"] >= 0).all()) and bool((out["uncertainty"] >= 0).all())
    assert bool(((out["rgb"] > 0) & (out["rgb"] < 1)).all())
    for name in ("audio_attention", "expression_attention"):
        assert bool(((out[name] >= 0) & (out[name] <= 1)).all())
    torch.testing.assert_close(field.density(points, audio, expression), out["sigma"])


def test_shared_codes_equal_per_point_codes():
    torch.manual_seed(0)
    field = HeadField(tiny_field())
    points, dirs, audio, expression, appearance = random_inputs(20)
    shared = field(points, dirs, audio, expression, appearance)
    per_point = field(points, dirs, audio.expand(20, 32).clone(), expression.expand(20, 7).clone(),
                      appearance.expand(20, 4).clone())
    for name in shared:
        torch.testing.assert_close(shared[name], per_point[name])
    with pytest.raises(ValueError, match="audio must be \\[32\\] or \\[N, 32\\]"):
        field(points, dirs, torch.zeros(5, 32), expression, appearance)


def test_gradients_reach_grids_mlps_audio_and_expression():
    torch.manual_seed(0)
    field = HeadField(tiny_field())
    randomize_grid(field)
    points, dirs, audio, expression, appearance = random_inputs(64)
    audio.requires_grad_(True)
    expression.requires_grad_(True)
    out = field(points, dirs, audio, expression, appearance)
    (out["sigma"].sum() + out["rgb"].sum() + out["uncertainty"].sum()).backward()
    modules = {"encoding": field.encoding, "audio_attention": field.audio_attention,
               "expression_attention": field.expression_attention, "density_net": field.density_net,
               "color_net": field.color_net, "uncertainty_net": field.uncertainty_net}
    for name, module in modules.items():
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name
    assert float(audio.grad.abs().sum()) > 0
    assert float(expression.grad.abs().sum()) > 0


def _close_attention(net: torch.nn.Sequential) -> None:
    # sigmoid(-1e4) == 0 exactly in float32: the attention weights become zero everywhere
    with torch.no_grad():
        net[-1].weight.zero_()
        net[-1].bias.fill_(-1e4)


def test_audio_changes_the_field_only_through_its_attention():
    torch.manual_seed(0)
    field = HeadField(tiny_field())
    randomize_grid(field)
    points, dirs, audio, expression, appearance = random_inputs(40)
    other_audio = audio + 3.0
    before = field(points, dirs, audio, expression, appearance)
    before_other = field(points, dirs, other_audio, expression, appearance)
    assert not torch.allclose(before["sigma"], before_other["sigma"])
    _close_attention(field.audio_attention)
    after = field(points, dirs, audio, expression, appearance)
    after_other = field(points, dirs, other_audio, expression, appearance)
    for name in after:
        torch.testing.assert_close(after[name], after_other[name], rtol=0, atol=0)
    torch.testing.assert_close(after["audio_attention"], torch.zeros(40))
    # expression still matters: only the audio path was closed
    changed = field(points, dirs, audio, expression + 1.0, appearance)
    assert not torch.allclose(after["sigma"], changed["sigma"])


def test_expression_changes_the_field_only_through_its_attention():
    torch.manual_seed(0)
    field = HeadField(tiny_field())
    randomize_grid(field)
    points, dirs, audio, expression, appearance = random_inputs(40)
    assert not torch.allclose(field.density(points, audio, expression), field.density(points, audio, 1 - expression))
    _close_attention(field.expression_attention)
    torch.testing.assert_close(field.density(points, audio, expression), field.density(points, audio, 1 - expression),
                               rtol=0, atol=0)


# -------------------------------------------------------------------------------------------------------- model


def tiny_model(n_frames: int = 2, step_size: float = 0.2) -> HeadModel:
    config = HeadModelConfig(field=tiny_field(), audio_window=1, audio_hidden=16, grid_resolution=8,
                             step_size=step_size, grid_warmup_steps=10_000)
    return HeadModel(config, audio_feature_shape=(1,), n_frames=n_frames)


def parallel_rays(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rays along +z from z = -3 through the unit box, at (x, y) in [-0.9, 0.9]^2."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 1.8 - 0.9
    rays_o = torch.cat([xy, torch.full((n, 1), -3.0)], dim=-1)
    rays_d = torch.tensor([[0.0, 0.0, 1.0]]).expand(n, 3).contiguous()
    return rays_o, rays_d, xy


def test_render_shapes_and_per_ray_layouts_agree():
    torch.manual_seed(0)
    model = tiny_model(n_frames=3)
    with torch.no_grad():
        model.appearance.weight.normal_()
    rays_o, rays_d, _ = parallel_rays(16)
    audio, expression = torch.randn(32), torch.rand(7)
    shared = model.render(rays_o, rays_d, audio, expression, frame_indices=2, background=0.5)
    assert {k: tuple(v.shape) for k, v in shared.items()} == {
        "rgb": (16, 3), "depth": (16,), "opacity": (16,), "uncertainty": (16,), "audio_attention": (16,),
        "expression_attention": (16,)}
    per_ray = model.render(rays_o, rays_d, audio.expand(16, 32).clone(), expression.expand(16, 7).clone(),
                           frame_indices=torch.full((16,), 2), background=torch.full((16, 3), 0.5))
    for name in shared:
        torch.testing.assert_close(shared[name], per_ray[name])
    losses = model.get_losses(shared, torch.zeros(16, 3), lower_face=torch.arange(16) < 8)
    assert sorted(losses) == ["audio_attention", "entropy", "expression_attention", "photometric"]
    # the appearance code of frame 2, given directly, is the same render
    direct = model.render(rays_o, rays_d, audio, expression, appearance=model.appearance.weight[2])
    torch.testing.assert_close(direct["opacity"], shared["opacity"])
    # a ray missing the box has opacity 0 and shows the background
    miss = model.render(torch.tensor([[5.0, 5.0, -3.0]]), torch.tensor([[0.0, 0.0, 1.0]]), audio, expression,
                        background=torch.tensor([0.1, 0.2, 0.3]))
    torch.testing.assert_close(miss["rgb"], torch.tensor([[0.1, 0.2, 0.3]]))
    assert miss["opacity"].item() == 0.0 and miss["uncertainty"].item() == 0.0


def test_param_groups_cover_every_parameter_once():
    model = tiny_model()
    groups = model.param_groups(lr_grid=1e-2, lr_mlp=1e-3, weight_decay=1e-4)
    assert [g["name"] for g in groups] == ["grid", "mlp"]
    assert groups[0]["params"] == [model.field.encoding.embeddings] and groups[0]["weight_decay"] == 0.0
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}
    torch.optim.AdamW(groups)  # accepted as is


def test_update_occupancy_takes_the_max_over_conditionings():
    torch.manual_seed(0)
    model = tiny_model()
    assert not model.update_occupancy(1)  # not an update step
    # density rises with the audio channel 0 only: a closed/zero code must not empty the grid
    calls = []

    def fake_density(points, audio, expression):
        calls.append(float(audio[0]))
        return torch.full((points.shape[0],), float(audio[0]))

    model.field.density = fake_density
    codes = torch.zeros(2, 32)
    codes[1, 0] = 5.0
    assert model.update_occupancy(0, codes, torch.zeros(2, 7))
    assert calls == [0.0, 5.0]
    torch.testing.assert_close(model.grid.density, torch.full((8, 8, 8), 5.0))


def test_overfits_an_audio_dependent_scene_and_early_termination_matches():
    """Frame 0 (audio 0) is bluish with a left/right split, frame 1 (audio 1) reddish with a top/bottom split. No
    appearance codes are used, so the colour can only follow the frame through the audio code."""
    torch.manual_seed(0)
    model = tiny_model(n_frames=2)
    rays_o, rays_d, xy = parallel_rays(128)
    features = torch.tensor([[0.0], [1.0]])
    low, high = torch.full((128,), 0.2), torch.full((128,), 0.8)
    targets = [torch.stack([0.2 + 0.6 * (xy[:, 0] > 0), low, high], -1),
               torch.stack([high, 0.2 + 0.6 * (xy[:, 1] > 0), low], -1)]
    expression = torch.zeros(7)

    def total_loss() -> float:
        with torch.no_grad():
            codes = model.encode_audio(features, torch.tensor([0, 1]))
            return sum(float(((model.render(rays_o, rays_d, codes[f], expression)["rgb"]
                               - targets[f]) ** 2).mean()) for f in range(2))

    initial = total_loss()
    generator = torch.Generator().manual_seed(1)
    optimizer = torch.optim.Adam(model.param_groups(lr_grid=3e-2, lr_mlp=1e-2))
    for step in range(150):
        frame = step % 2
        code = model.encode_audio(features, frame)
        model.update_occupancy(step, code.detach()[None], expression[None])
        # a random background each step: only an opaque head matches the target whatever the background
        out = model.render(rays_o, rays_d, code, expression, background=torch.rand(3, generator=generator))
        loss = ((out["rgb"] - targets[frame]) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    final = total_loss()
    assert final < initial / 100, (initial, final)  # ~0.19 → ~4e-4; with the audio code zeroed it stalls at ~0.12

    # inference: finer steps (100 per ray, several marching chunks of 32) so early termination really cuts rays
    model.step_size = 0.02
    with torch.no_grad():
        code = model.encode_audio(features, 1)
        full = model.render(rays_o, rays_d, code, expression, background=1.0)
        fast = model.render(rays_o, rays_d, code, expression, background=1.0,
                            early_stop_eps=1e-4)
    # the rays saturate, so early termination stops them (the diffs below are ~1e-4, not 0)
    assert float(full["opacity"].mean()) > 0.99 and float(full["opacity"].min()) > 0.9
    for name in full:
        # a stopped ray's dropped tail has transmittance < eps = 1e-4, times |value - background| <= 1 (colour,
        # attention, opacity) or t <= 4 (depth: rays end 4 units from their origin)
        torch.testing.assert_close(fast[name], full[name], rtol=0, atol=5e-4, msg=name)
