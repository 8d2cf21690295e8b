"""Video/audio reading and writing, and atomic file writes.

`synctalk.io.media` (ffmpeg-based) is imported on use: `from synctalk.io.media import read_frames`.
"""

from synctalk.io.atomic import atomic_path, atomic_save_npy, atomic_write_json, atomic_write_text

__all__ = ["atomic_path", "atomic_save_npy", "atomic_write_json", "atomic_write_text"]
