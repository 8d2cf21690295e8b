"""Named model files that synctalk downloads on first use, kept in one cache folder.

Cache folder: `$SYNCTALK_MODELS` if set, else `$SYNCTALK_HOME/models`, else `~/.cache/synctalk/models`.
Set `SYNCTALK_OFFLINE=1` to never download: a missing file is then an error that says what to put where.

    path = fetch("face_landmarker")          # -> Path, verified by sha256
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from synctalk.errors import AssetError
from synctalk.io.atomic import atomic_path


@dataclass(frozen=True)
class Asset:
    name: str
    filename: str
    url: str
    sha256: str
    size_bytes: int
    licence: str
    description: str


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
    """True when the file is in the cache (size check only; `fetch` verifies the checksum)."""
    path = path_of(name)
    return path.is_file() and path.stat().st_size == get(name).size_bytes


def fetch(name: str, progress: bool = True) -> Path:
    """Return the verified local path of asset `name`, downloading it into the cache if needed."""
    asset = get(name)
    path = cache_dir() / asset.filename
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
