"""Encodings: hand values, orthonormal SH, shapes and init of the grid modules, backend switch and its errors."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from cuda_ext.hashgrid import reference as hashgrid_reference
from cuda_ext.trihash import reference as trihash_reference
from synctalk.errors import ConfigError
from synctalk.field.encoding import (
    FrequencyEncoding,
    HashGridEncoding,
    SHEncoding,
    TriPlaneHashEncoding,
    spherical_harmonics,
)

HAVE_TCNN = importlib.util.find_spec("tinycudann") is not None


def test_frequency_hand_values():
    encoding = FrequencyEncoding(input_dim=1, num_frequencies=2, include_input=True)
    assert encoding.output_dim == 5
    got = encoding(torch.tensor([[0.5]], dtype=torch.float64))
    # [x, sin(π/2), cos(π/2), sin(π), cos(π)]
    torch.testing.assert_close(got, torch.tensor([[0.5, 1.0, 0.0, 0.0, -1.0]], dtype=torch.float64),
                               rtol=0, atol=1e-12)


def test_frequency_layout_without_input():
    encoding = FrequencyEncoding(input_dim=3, num_frequencies=4, include_input=False)
    inputs = torch.rand(7, 3)
    got = encoding(inputs)
    assert got.shape == (7, encoding.output_dim) == (7, 24)
    # block k, sin then cos, each D = 3 wide
    torch.testing.assert_close(got[:, 6 * 2:6 * 2 + 3], torch.sin(4 * math.pi * inputs))
    torch.testing.assert_close(got[:, 6 * 3 + 3:], torch.cos(8 * math.pi * inputs))
    with pytest.raises(ValueError, match="\\[..., 3\\]"):
        encoding(torch.rand(7, 2))


def test_sh_hand_values_on_the_z_axis():
    got = SHEncoding(4)(torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64))[0]
    expected = torch.zeros(16, dtype=torch.float64)
    expected[0] = 0.5 * math.sqrt(1 / math.pi)  # Y_0^0
    expected[2] = math.sqrt(3 / (4 * math.pi))  # Y_1^0 at z = 1
    expected[6] = 0.25 * math.sqrt(5 / math.pi) * 2  # Y_2^0 = c (3z² - 1)
    expected[12] = 0.25 * math.sqrt(7 / math.pi) * 2  # Y_3^0 = c (5z³ - 3z)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_sh_is_orthonormal_on_the_sphere():
    # Fibonacci-lattice quadrature: nearly uniform points, each with area 4π/n; exact up to ~1e-5 for degree <= 6
    n = 20000
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (1 + 5 ** 0.5) * i
    r = torch.sqrt(1 - z * z)
    directions = torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1)
    basis = spherical_harmonics(directions, 4)  # [n, 16]
    gram = basis.T @ basis * (4 * math.pi / n)
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), rtol=0, atol=1e-3)


def test_sh_degrees_are_prefixes():
    directions = torch.nn.functional.normalize(torch.randn(9, 3), dim=-1)
    full = SHEncoding(4)(directions)
    for degree in (1, 2, 3):
        encoding = SHEncoding(degree)
        assert encoding.output_dim == degree ** 2
        torch.testing.assert_close(encoding(directions), full[:, :degree ** 2])
    with pytest.raises(ConfigError, match="1 to 4"):
        SHEncoding(5)


def test_triplane_defaults_shape_and_init():
    encoding = TriPlaneHashEncoding(backend="torch")
    assert encoding.output_dim == 36
    assert encoding.resolutions[0] == 64 and encoding.resolutions[-1] == 512 and len(encoding.resolutions) == 12
    assert encoding.embeddings.shape == (3, encoding.offsets[-1], 1) and encoding.embeddings.dtype == torch.float32
    assert encoding.embeddings.abs().max() <= 1e-4 and encoding.embeddings.std() > 1e-5
    points = torch.rand(10, 3) * 2 - 1
    out = encoding(points)
    expected = trihash_reference.trihash_encode(points, encoding.embeddings, encoding.offsets, encoding.resolutions)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    out.sum().backward()
    assert encoding.embeddings.grad.abs().sum() > 0


def test_hashgrid_defaults_and_per_level_scale():
    encoding = HashGridEncoding(num_levels=4, base_resolution=8, per_level_scale=2.0, log2_table_size=12, bound=2.0,
                                backend="torch")
    assert encoding.resolutions == (8, 16, 32, 64) and encoding.output_dim == 8
    points = torch.rand(10, 3) * 4 - 2
    expected = hashgrid_reference.hashgrid_encode(points, encoding.embeddings, encoding.offsets,
                                                  encoding.resolutions, 2.0)
    torch.testing.assert_close(encoding(points), expected, rtol=0, atol=0)
    default = HashGridEncoding(backend="torch")
    assert default.output_dim == 32 and default.resolutions[-1] == 2048
    assert default.offsets[-1] - default.offsets[-2] == 2 ** 19


@pytest.mark.parametrize("cls", [TriPlaneHashEncoding, HashGridEncoding])
def test_auto_backend_agrees_with_torch(cls):
    kwargs = dict(num_levels=4, base_resolution=8, finest_resolution=64, log2_table_size=10)
    torch.manual_seed(0)
    fast = cls(**kwargs, backend="auto")
    slow = cls(**kwargs, backend="torch")
    slow.load_state_dict(fast.state_dict())  # same tables: the backend is not part of the checkpoint
    points = torch.rand(256, 3) * 2 - 1
    out_fast, out_slow = fast(points), slow(points)
    upstream = torch.randn_like(out_slow)
    out_fast.backward(upstream)
    out_slow.backward(upstream)
    # fp32, different summation order only (see tests/cuda_ext): relative 1e-5
    scale = out_slow.abs().max()
    assert (out_fast - out_slow).abs().max() <= 1e-5 * scale
    grad_scale = slow.embeddings.grad.abs().max()
    assert (fast.embeddings.grad - slow.embeddings.grad).abs().max() <= 1e-5 * grad_scale


@pytest.mark.parametrize("cls", [TriPlaneHashEncoding, HashGridEncoding])
def test_unknown_backend_is_a_config_error(cls):
    with pytest.raises(ConfigError, match="unknown encoding backend 'fast'"):
        cls(backend="fast")


@pytest.mark.skipif(HAVE_TCNN, reason="tinycudann is installed here")
@pytest.mark.parametrize("cls", [TriPlaneHashEncoding, HashGridEncoding])
def test_tcnn_without_tinycudann_says_how_to_get_it(cls):
    with pytest.raises(ConfigError, match="tiny-cuda-nn"):
        cls(backend="tcnn")
