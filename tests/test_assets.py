"""Asset manager: cache location, checksum, download through the real code path, offline errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from conftest import real_file

from synctalk import assets
from synctalk.errors import AssetError


@pytest.fixture
def local_asset(tmp_path, monkeypatch):
    """An asset served from a file:// URL, with a fresh empty cache, downloads allowed."""
    payload = b"model weights " * 1000
    source = tmp_path / "server" / "tiny.bin"
    source.parent.mkdir()
    source.write_bytes(payload)
    asset = assets.Asset(name="tiny_test", filename="tiny.bin", url=source.as_uri(),
                         sha256=hashlib.sha256(payload).hexdigest(), size_bytes=len(payload), licence="CC0",
                         description="test payload")
    monkeypatch.setitem(assets.REGISTRY, asset.name, asset)
    monkeypatch.setenv("SYNCTALK_MODELS", str(tmp_path / "cache"))
    monkeypatch.delenv("SYNCTALK_OFFLINE", raising=False)
    return asset, source


def test_face_landmarker_from_shared_cache():
    expected = real_file("models/face_landmarker.task")
    path = assets.fetch("face_landmarker")
    assert path == expected and assets.sha256_of(path) == assets.get("face_landmarker").sha256
    assert assets.is_available("face_landmarker")


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("SYNCTALK_MODELS", raising=False)
    monkeypatch.delenv("SYNCTALK_HOME", raising=False)
    assert assets.cache_dir() == Path.home() / ".cache" / "synctalk" / "models"
    monkeypatch.setenv("SYNCTALK_HOME", str(tmp_path / "home"))
    assert assets.cache_dir() == tmp_path / "home" / "models"
    monkeypatch.setenv("SYNCTALK_MODELS", str(tmp_path / "m"))
    assert assets.cache_dir() == tmp_path / "m"


def test_download_verifies_and_caches(local_asset):
    asset, source = local_asset
    path = assets.fetch(asset.name, progress=False)
    assert path == assets.cache_dir() / "tiny.bin" and path.read_bytes() == source.read_bytes()
    source.unlink()  # a second fetch must not download again
    assert assets.fetch(asset.name, progress=False) == path
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.bin"]  # no temp files left


def test_download_with_wrong_checksum_saves_nothing(local_asset, monkeypatch):
    asset, _ = local_asset
    monkeypatch.setitem(assets.REGISTRY, asset.name, assets.Asset(**{**asset.__dict__, "sha256": "0" * 64}))
    with pytest.raises(AssetError, match="sha256"):
        assets.fetch(asset.name, progress=False)
    assert not any(assets.cache_dir().glob("*tiny*"))


def test_unreachable_url_says_what_to_put_where(local_asset):
    asset, source = local_asset
    source.unlink()
    with pytest.raises(AssetError) as err:
        assets.fetch(asset.name, progress=False)
    text = str(err.value)
    assert "download failed" in text and asset.url in text and str(assets.cache_dir() / "tiny.bin") in text


def test_offline_mode_never_downloads(local_asset, monkeypatch):
    asset, _ = local_asset
    monkeypatch.setenv("SYNCTALK_OFFLINE", "1")
    with pytest.raises(AssetError) as err:
        assets.fetch(asset.name, progress=False)
    assert "offline mode" in str(err.value) and "tiny.bin" in str(err.value)
    assert not assets.cache_dir().exists()


def test_corrupt_cached_file_is_reported(local_asset):
    asset, _ = local_asset
    assets.cache_dir().mkdir(parents=True)
    (assets.cache_dir() / "tiny.bin").write_bytes(b"truncated")
    with pytest.raises(AssetError, match="corrupt or a different version.*Delete it"):
        assets.fetch(asset.name, progress=False)


def test_unknown_asset():
    with pytest.raises(AssetError, match="unknown asset 'nope'; known: face_landmarker"):
        assets.fetch("nope")
