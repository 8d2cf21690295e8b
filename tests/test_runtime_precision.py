"""runtime.configure_precision: the per-backend TF32 API, on any device, without touching the deprecated flags."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import requires_cuda

from synctalk.runtime import configure_precision

FLAGS = (torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn)


@pytest.fixture(autouse=True)
def restore_flags():
    saved = [flag.fp32_precision for flag in FLAGS]
    yield
    for flag, value in zip(FLAGS, saved, strict=True):
        flag.fp32_precision = value


@pytest.mark.parametrize("device", [None, "cpu", torch.device("cpu"), "cuda", "cuda:0", torch.device("cuda", 0)])
@pytest.mark.parametrize("tf32", [True, False])
def test_sets_the_new_api_for_any_device_without_warnings(device, tf32):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the deprecated allow_tf32 API warns when used
        description = configure_precision(device, tf32)
    expected = "tf32" if tf32 else "ieee"
    assert [flag.fp32_precision for flag in FLAGS] == [expected] * 3
    assert expected in description
    # CPU maths still runs after the switch (torch checks the flags' consistency inside matmul and conv)
    x = torch.randn(1, 2, 6, 6)
    assert torch.nn.functional.conv2d(x, torch.randn(3, 2, 3, 3)).shape == (1, 3, 4, 4)
    assert (x.flatten(1) @ torch.randn(72, 4)).shape == (1, 4)


def test_the_last_call_wins():
    configure_precision("cpu", True)
    configure_precision("cpu", False)
    assert torch.backends.cuda.matmul.fp32_precision == "ieee" and torch.backends.cudnn.conv.fp32_precision == "ieee"
    configure_precision("cpu", True)
    assert torch.backends.cuda.matmul.fp32_precision == "tf32"


@requires_cuda
@pytest.mark.parametrize("tf32", [True, False])
def test_cuda_matmul_and_conv_run_under_either_setting(tf32):
    configure_precision("cuda", tf32)
    a = torch.randn(64, 64, device="cuda")
    reference = (a.double() @ a.double()).float()
    torch.testing.assert_close(a @ a, reference, rtol=1e-2 if tf32 else 1e-5, atol=1e-1 if tf32 else 1e-4)
    x = torch.randn(1, 2, 8, 8, device="cuda")
    assert torch.nn.functional.conv2d(x, torch.randn(3, 2, 3, 3, device="cuda")).shape == (1, 3, 6, 6)
