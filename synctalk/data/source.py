"""The subject's original full-resolution frames (for portrait paste-back), extracted once into a JPEG cache.

    frames = SourceFrames(ds, workspace / "portrait" / "source")
    original = frames[120]          # uint8 [H, W, 3], frame 120 of the subject at the source's full size

Frame ``k`` is decoded with the same fps filter preprocessing used, so it is the uncropped frame ``k``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from synctalk.errors import DatasetError

log = logging.getLogger("synctalk.data")


def _identity(video: Path) -> dict:
    """What recognises a video file again after a move (same size and modification time), and its path."""
    stat = video.stat()
    return {"video": str(video.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class SourceFrames:
    """``video``: the original video when given explicitly (``--source``); a cache made from another file is then
    extracted again from it (a cache of the same file, moved or not, is kept)."""

    def __init__(self, ds, folder: str | Path, video: str | Path | None = None):
        self.ds = ds
        self.folder = Path(folder)
        source = ds.meta.get("source", {})
        self.video = Path(video or source.get("path", ""))
        self.explicit = video is not None
        self.expected = source

    def _done(self) -> bool:
        marker = self.folder / "done.json"
        if not marker.is_file():
            return False
        done = json.loads(marker.read_text())
        if done.get("n_frames") != len(self.ds):
            return False
        if self.explicit and self.video.is_file() and not self._same_video(done):
            log.info("portrait: extracting the original frames again from --source %s (the cache in %s was made "
                     "from %s)", self.video, self.folder, done.get("video"))
            return False
        return True

    def _same_video(self, done: dict) -> bool:
        now = _identity(self.video)
        if "size" in done and "mtime_ns" in done:
            return (done["size"], done["mtime_ns"]) == (now["size"], now["mtime_ns"])
        return Path(done.get("video", "")).resolve() == Path(now["video"])

    def ensure(self, progress: bool = True) -> None:
        """Extract the frames unless the cache is complete (a partial cache is redone)."""
        if self._done():
            return
        from synctalk.io.atomic import atomic_write_json
        from synctalk.io.images import write_image
        from synctalk.io.media import probe, read_frames
        from synctalk.progress import track

        if not self.video.is_file():
            raise DatasetError(f"portrait paste-back needs the original video {self.video} (recorded in "
                               f"{self.ds.root / 'meta.json'}); put it back there or pass --source VIDEO")
        info = probe(self.video)
        if (self.expected.get("width"), self.expected.get("height")) not in ((info.width, info.height), (None, None)):
            raise DatasetError(f"{self.video}: is {info.width}x{info.height}, but the subject was made from a "
                               f"{self.expected.get('width')}x{self.expected.get('height')} video; pass the same "
                               "video with --source")
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "done.json").unlink(missing_ok=True)  # a run killed while extracting leaves no complete mark
        count = 0
        frames = read_frames(self.video, fps=self.ds.fps, info=info, max_frames=len(self.ds))
        for k, frame in enumerate(track(frames, "source frames", total=len(self.ds), unit="frame", leave=False,
                                        enabled=progress)):
            write_image(self.path(k), frame)
            count += 1
        if count < len(self.ds):
            raise DatasetError(f"{self.video}: gave {count} frames at {self.ds.fps:g} fps, the subject has "
                               f"{len(self.ds)}; is this the video the subject was made from?")
        atomic_write_json(self.folder / "done.json", {"n_frames": count, **_identity(self.video)})

    def path(self, index: int) -> Path:
        return self.folder / f"{index:06d}.jpg"

    def __getitem__(self, index: int) -> np.ndarray:
        from synctalk.io.images import read_image

        self.ensure(progress=False)
        return read_image(self.path(int(index)))
