"""Compositing: reference vs a naive loop, gradcheck, closed forms, padded vs packed, nerfacc vs torch, edges."""

from __future__ import annotations

import math

import pytest
import torch

from cuda_ext.composite import ops, reference

DOUBLE = torch.float64


def random_packed(counts: list[int], channels: int = 3, extra_channels: int = 2, seed: int = 0,
                  dtype=DOUBLE) -> dict:
    """Packed samples with the given per-ray counts, increasing t, moderate densities."""
    gen = torch.Generator().manual_seed(seed)
    ray_indices = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts, dtype=torch.long))
    n = int(ray_indices.numel())
    lengths = torch.rand(n, generator=gen, dtype=dtype) * 0.2 + 0.05
    gaps = torch.rand(n, generator=gen, dtype=dtype) * 0.05
    t_starts = torch.zeros(n, dtype=dtype)
    t_ends = torch.zeros(n, dtype=dtype)
    for i in range(n):  # tiny inputs: a loop keeps the construction obvious
        first = i == 0 or ray_indices[i] != ray_indices[i - 1]
        t_starts[i] = (1.0 if first else t_ends[i - 1]) + gaps[i]
        t_ends[i] = t_starts[i] + lengths[i]
    return {"ray_indices": ray_indices, "t_starts": t_starts, "t_ends": t_ends,
            "sigmas": torch.rand(n, generator=gen, dtype=dtype) * 4.0,
            "rgbs": torch.rand(n, channels, generator=gen, dtype=dtype),
            "extras": torch.randn(n, extra_channels, generator=gen, dtype=dtype), "n_rays": len(counts)}


def naive_composite(s: dict, extras_mode: str, background: list[float] | None):
    """One Python loop per ray and per sample: the textbook formula, nothing shared with the reference."""
    out = []
    for ray in range(s["n_rays"]):
        trans, opacity, depth = 1.0, 0.0, 0.0
        color = [0.0] * s["rgbs"].shape[1]
        extra = [0.0] * s["extras"].shape[1]
        weights, transmittances = [], []
        for i in range(s["ray_indices"].numel()):
            if int(s["ray_indices"][i]) != ray:
                continue
            delta = float(s["t_ends"][i] - s["t_starts"][i])
            alpha = 1.0 - math.exp(-float(s["sigmas"][i]) * delta)
            weight = trans * alpha
            weights.append(weight)
            transmittances.append(trans)
            opacity += weight
            depth += weight * float(s["t_starts"][i] + s["t_ends"][i]) / 2
            color = [c + weight * float(v) for c, v in zip(color, s["rgbs"][i], strict=True)]
            factor = weight if extras_mode == "weighted" else 1.0
            extra = [e + factor * float(v) for e, v in zip(extra, s["extras"][i], strict=True)]
            trans *= 1.0 - alpha
        if background is not None:
            color = [c + (1.0 - opacity) * b for c, b in zip(color, background, strict=True)]
        out.append((color, opacity, depth, extra, weights, transmittances))
    return out


@pytest.mark.parametrize("extras_mode", ["weighted", "sum"])
@pytest.mark.parametrize("background", [None, [0.2, 0.5, 1.0]])
def test_reference_matches_naive_loop(extras_mode, background):
    s = random_packed([3, 0, 1, 5])
    result = reference.composite(s["ray_indices"], s["t_starts"], s["t_ends"], s["sigmas"], s["rgbs"], s["n_rays"],
                                 s["extras"], extras_mode, None if background is None else torch.tensor(background,
                                                                                                       dtype=DOUBLE))
    expected = naive_composite(s, extras_mode, background)
    for ray, (color, opacity, depth, extra, weights, trans) in enumerate(expected):
        sel = s["ray_indices"] == ray
        # float64 throughout: only summation order differs
        torch.testing.assert_close(result.colors[ray], torch.tensor(color, dtype=DOUBLE), rtol=1e-12, atol=1e-12)
        assert result.opacities[ray].item() == pytest.approx(opacity, abs=1e-12)
        assert result.depths[ray].item() == pytest.approx(depth, abs=1e-12)
        torch.testing.assert_close(result.extras[ray], torch.tensor(extra, dtype=DOUBLE), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(result.weights[sel], torch.tensor(weights, dtype=DOUBLE).reshape(-1))
        torch.testing.assert_close(result.transmittance[sel], torch.tensor(trans, dtype=DOUBLE).reshape(-1))


def test_worked_example_from_docstring():
    result = reference.composite(torch.tensor([0, 0]), torch.tensor([0.0, 0.5]), torch.tensor([0.5, 1.0]),
                                 torch.tensor([2.0, 0.0]), torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]), 1)
    torch.testing.assert_close(result.weights, torch.tensor([1 - math.exp(-1), 0.0]))
    torch.testing.assert_close(result.colors, torch.tensor([[1 - math.exp(-1), 0.0, 0.0]]))


def test_exclusive_cumsum_packed_hand_values():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    out = reference.exclusive_cumsum_packed(values, torch.tensor([0, 0, 2, 2, 2]), 3)
    assert out.tolist() == [0.0, 1.0, 0.0, 3.0, 7.0]


@pytest.mark.parametrize("extras_mode", ["weighted", "sum"])
def test_gradcheck_reference(extras_mode):
    s = random_packed([2, 0, 3], channels=3, extra_channels=2, seed=1)
    background = torch.tensor([0.3, 0.1, 0.7], dtype=DOUBLE, requires_grad=True)
    inputs = [s[k].clone().requires_grad_(True) for k in ("t_starts", "t_ends", "sigmas", "rgbs", "extras")]

    def fn(t_starts, t_ends, sigmas, rgbs, extras, bg):
        r = reference.composite(s["ray_indices"], t_starts, t_ends, sigmas, rgbs, s["n_rays"], extras, extras_mode,
                                bg)
        return r.colors, r.opacities, r.depths, r.extras, r.weights, r.transmittance

    assert torch.autograd.gradcheck(fn, (*inputs, background))


@pytest.mark.parametrize("extras_mode", ["weighted", "sum"])
def test_closed_form_backward_matches_autograd(extras_mode):
    """composite_backward (the CUDA kernel's spec) equals autograd of the reference, for every output's gradient."""
    s = random_packed([4, 1, 0, 3], seed=2)
    inputs = [s[k].clone().requires_grad_(True) for k in ("t_starts", "t_ends", "sigmas", "rgbs", "extras")]
    r = reference.composite(s["ray_indices"], *inputs[:4], s["n_rays"], inputs[4], extras_mode)
    gen = torch.Generator().manual_seed(3)
    upstream = [torch.randn(t.shape, generator=gen, dtype=DOUBLE) for t in
                (r.colors, r.opacities, r.depths, r.extras, r.weights, r.transmittance)]
    autograd = torch.autograd.grad([r.colors, r.opacities, r.depths, r.extras, r.weights, r.transmittance], inputs,
                                   upstream)
    closed = reference.composite_backward(s["ray_indices"], s["t_starts"], s["t_ends"], s["sigmas"], s["rgbs"],
                                          s["n_rays"], s["extras"], extras_mode, r.weights.detach(),
                                          r.transmittance.detach(), upstream[0], upstream[1], upstream[2],
                                          upstream[3], upstream[4], upstream[5])
    for got, want in zip(closed, autograd, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_constant_density_closed_form():
    """A slab [a, b] of constant density sigma and colour c, sampled with n equal steps."""
    sigma, a, b, n = 1.7, 2.0, 3.5, 3000
    edges = torch.linspace(a, b, n + 1, dtype=DOUBLE)
    color, background = torch.tensor([0.9, 0.4, 0.1], dtype=DOUBLE), torch.tensor([0.0, 0.5, 1.0], dtype=DOUBLE)
    r = reference.composite(torch.zeros(n, dtype=torch.long), edges[:-1], edges[1:], torch.full((n,), sigma,
                            dtype=DOUBLE), color.expand(n, 3), 1, background=background)
    opacity = 1.0 - math.exp(-sigma * (b - a))
    # piecewise-constant density is exact for opacity, whatever n
    assert r.opacities.item() == pytest.approx(opacity, abs=1e-12)
    torch.testing.assert_close(r.colors[0], color * opacity + background * (1 - opacity), rtol=1e-12, atol=1e-12)
    # depth: discrete geometric series, exact for midpoints ...
    dt = (b - a) / n
    q = math.exp(-sigma * dt)
    geometric = (1 - q ** n) / (1 - q)
    weighted_index = q * (1 - n * q ** (n - 1) + (n - 1) * q ** n) / (1 - q) ** 2
    discrete = (1 - q) * ((a + dt / 2) * geometric + dt * weighted_index)
    assert r.depths.item() == pytest.approx(discrete, rel=1e-10)
    # ... and within O(dt^2) of the continuous integral of t * sigma * exp(-sigma (t - a)) over [a, b]
    continuous = a + 1 / sigma - (b + 1 / sigma) * math.exp(-sigma * (b - a))
    assert r.depths.item() == pytest.approx(continuous, abs=1e-6)


@pytest.mark.parametrize("extras_mode", ["weighted", "sum"])
def test_padded_and_packed_agree(extras_mode):
    s = random_packed([3, 0, 5, 1], seed=4)
    keys = ("t_starts", "t_ends", "sigmas", "rgbs", "extras")
    packed_in = [s[k].clone().requires_grad_(True) for k in keys]
    padded_in = [reference.packed_to_padded(s[k], s["ray_indices"], s["n_rays"], fill=7.0)[0].requires_grad_(True)
                 for k in keys]
    mask = reference.packed_to_padded(s["sigmas"], s["ray_indices"], s["n_rays"])[1]
    bg = torch.tensor([0.1, 0.2, 0.3], dtype=DOUBLE)
    packed = ops.composite(s["ray_indices"], *packed_in[:4], s["n_rays"], packed_in[4], extras_mode, bg,
                           backend="torch")
    padded = ops.composite_padded(*padded_in[:4], mask, padded_in[4], extras_mode, bg, backend="torch")
    for name in ("colors", "opacities", "depths", "extras"):
        torch.testing.assert_close(getattr(packed, name), getattr(padded, name), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(packed.weights, padded.weights[mask])
    torch.testing.assert_close(packed.transmittance, padded.transmittance[mask])
    assert torch.all(padded.weights[~mask] == 0)
    loss = lambda r: (r.colors.sum() + 2 * r.depths.sum() + r.opacities.sum() + (r.extras ** 2).sum())  # noqa: E731
    g_packed = torch.autograd.grad(loss(packed), packed_in)
    g_padded = torch.autograd.grad(loss(padded), padded_in)
    for gp, gd in zip(g_packed, g_padded, strict=True):
        torch.testing.assert_close(gp, gd[mask], rtol=1e-12, atol=1e-12)
        assert torch.all(gd[~mask] == 0)  # padding gets no gradient


def test_pack_unpack_roundtrip():
    ray_indices = torch.tensor([0, 0, 2, 3, 3, 3])
    values = torch.arange(6.0)
    padded, mask = reference.packed_to_padded(values, ray_indices, 4, fill=-1.0)
    assert padded.tolist() == [[0, 1, -1], [-1, -1, -1], [2, -1, -1], [3, 4, 5]]
    back, rays = reference.padded_to_packed(padded, mask)
    assert back.tolist() == values.tolist() and rays.tolist() == ray_indices.tolist()


@pytest.mark.parametrize("extras_mode", ["weighted", "sum"])
def test_nerfacc_backend_matches_torch(extras_mode):
    s = random_packed([3, 0, 4, 2], seed=5, dtype=torch.float32)
    bg = torch.tensor([0.5, 0.5, 0.5])
    keys = ("t_starts", "t_ends", "sigmas", "rgbs", "extras")
    results, grads = {}, {}
    for backend in ("torch", "nerfacc"):
        inputs = [s[k].clone().requires_grad_(True) for k in keys]
        r = ops.composite(s["ray_indices"], *inputs[:4], s["n_rays"], inputs[4], extras_mode, bg, backend=backend)
        results[backend] = r
        grads[backend] = torch.autograd.grad(r.colors.sum() + r.depths.sum() + r.extras.sum(), inputs[2:],
                                             allow_unused=True)
    for name in ("colors", "opacities", "depths", "extras", "weights", "transmittance"):
        # float32; nerfacc scans in float32, we in float64
        torch.testing.assert_close(getattr(results["nerfacc"], name), getattr(results["torch"], name),
                                   rtol=1e-5, atol=1e-6)
    for g_n, g_t in zip(grads["nerfacc"], grads["torch"], strict=True):
        torch.testing.assert_close(g_n, g_t, rtol=1e-5, atol=1e-5)


def test_nerfacc_padded_matches_torch_padded():
    s = random_packed([2, 3], seed=6, dtype=torch.float32)
    padded = [reference.packed_to_padded(s[k], s["ray_indices"], 2)[0] for k in ("t_starts", "t_ends", "sigmas",
                                                                                 "rgbs")]
    mask = reference.packed_to_padded(s["sigmas"], s["ray_indices"], 2)[1]
    a = ops.composite_padded(*padded, mask, backend="nerfacc")
    b = ops.composite_padded(*padded, mask, backend="torch")
    torch.testing.assert_close(a.colors, b.colors)
    torch.testing.assert_close(a.weights, b.weights)


def test_empty_batch_and_rays_without_samples():
    empty = torch.zeros(0)
    r = ops.composite(torch.zeros(0, dtype=torch.long), empty, empty, empty, torch.zeros(0, 3), 0, backend="torch")
    assert r.colors.shape == (0, 3) and r.opacities.shape == (0,)
    # rays exist but none has a sample: pure background, zero opacity and depth
    r = ops.composite(torch.zeros(0, dtype=torch.long), empty, empty, empty, torch.zeros(0, 3), 2,
                      background=torch.tensor([1.0, 0.0, 0.5]), backend="torch")
    assert r.colors.tolist() == [[1.0, 0.0, 0.5]] * 2 and r.opacities.tolist() == [0.0, 0.0]
    padded = ops.composite_padded(torch.zeros(2, 0), torch.zeros(2, 0), torch.zeros(2, 0), torch.zeros(2, 0, 3),
                                  torch.zeros(2, 0, dtype=torch.bool), background=1.0, backend="torch")
    assert padded.colors.tolist() == [[1.0, 1.0, 1.0]] * 2


def test_bad_inputs_name_the_problem():
    s = random_packed([2], dtype=torch.float32)
    with pytest.raises(ValueError, match="sigmas must be"):
        ops.composite(s["ray_indices"], s["t_starts"], s["t_ends"], s["sigmas"][:1], s["rgbs"], 1)
    with pytest.raises(ValueError, match="extras_mode"):
        ops.composite(s["ray_indices"], s["t_starts"], s["t_ends"], s["sigmas"], s["rgbs"], 1, s["extras"], "mean",
                      backend="torch")
    with pytest.raises(ValueError, match="backend"):
        ops.composite(s["ray_indices"], s["t_starts"], s["t_ends"], s["sigmas"], s["rgbs"], 1, backend="jax")
    with pytest.raises(ValueError, match="needs cuda tensors"):
        ops.composite(s["ray_indices"], s["t_starts"], s["t_ends"], s["sigmas"], s["rgbs"], 1, backend="cuda")


def test_non_contiguous_inputs():
    s = random_packed([3, 2], dtype=torch.float32)
    rgbs_t = s["rgbs"].t().contiguous().t()  # same values, column-major
    a = ops.composite(s["ray_indices"], s["t_starts"], s["t_ends"], s["sigmas"], rgbs_t, 2, backend="torch")
    b = ops.composite(s["ray_indices"], s["t_starts"], s["t_ends"], s["sigmas"], s["rgbs"], 2, backend="torch")
    torch.testing.assert_close(a.colors, b.colors, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs(dtype):
    s = random_packed([6, 2, 0, 9], seed=7, dtype=torch.float32)
    args = [s[k] for k in ("t_starts", "t_ends", "sigmas", "rgbs")]
    full = ops.composite(s["ray_indices"], *args, s["n_rays"], backend="torch")
    low = ops.composite(s["ray_indices"], *[a.to(dtype) for a in args], s["n_rays"], backend="torch")
    assert low.colors.dtype == dtype
    # 8-bit (bf16) / 11-bit (fp16) mantissas over a handful of samples: ~1e-2 absolute
    torch.testing.assert_close(low.colors.float(), full.colors, rtol=0, atol=2e-2)
    torch.testing.assert_close(low.opacities.float(), full.opacities, rtol=0, atol=2e-2)
