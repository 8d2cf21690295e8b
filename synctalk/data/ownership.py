"""Whose a subject folder is: `SUBJECT/manifest.json` names the input it was made from (the video and the separate
audio, by path, size, modification time and sha256) and the preprocess settings that shape its frames and sound.

`synctalk preprocess` writes it before anything else and checks it before writing anything, so that

- a folder holding someone else's files (no manifest.json, no meta.json) is never written into;
- a subject made from another video, another audio file or other frame settings is not silently replaced (its
  frames and audio would be overwritten and the rest left inconsistent): the run is refused with what differs,
  unless `--overwrite` says to replace it, in which case every step is redone.

Subjects written before the manifest existed are recognised by `meta.json["source"]` and adopted.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synctalk.data.contract import FRAME_DIR_EXTENSIONS, MANIFEST_FILENAME, META_FILENAME
from synctalk.errors import UserInputError
from synctalk.io.atomic import atomic_write_json

log = logging.getLogger("synctalk.preprocess")

KIND = "synctalk subject"
# Temporary files of an interrupted atomic write (synctalk.io.atomic.temp_path_beside): .<stem>.<random>.tmp<ext>
TEMPORARY = re.compile(r"^\..+\.tmp(\.[A-Za-z0-9]+)?$")
IGNORED = {".synctalk.lock"}  # our lock file: present while a run holds the folder


@dataclass(frozen=True)
class Identity:
    """What makes a subject folder what it is: its input files and the settings its frames and audio follow."""

    video: dict[str, Any]            # path, size, mtime, sha256
    audio: dict[str, Any] | None     # the same for --audio FILE, None when the sound comes from the video
    settings: dict[str, Any]         # "preprocess.fps": 25.0, ...

    @classmethod
    def of(cls, video: Path, audio: Path | None, settings: dict[str, Any], sha256: dict[Path, str]) -> Identity:
        return cls(_file_identity(video, sha256[video]), _file_identity(audio, sha256[audio]) if audio else None,
                   dict(settings))

    def to_json(self) -> dict[str, Any]:
        return {"kind": KIND, "video": self.video, "audio": self.audio, "settings": self.settings,
                "written": time.strftime("%Y-%m-%d %H:%M:%S")}


def _file_identity(path: Path, sha256: str) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime": round(stat.st_mtime, 3), "sha256": sha256}


def check_output_target(root: Path, flag: str = "-o") -> None:
    """Refuse, before any work, an output path that is a file or lies under one, or a folder that cannot be
    written or created (synctalk.io.outputs probes it with a temporary file; nothing is created)."""
    from synctalk.io.outputs import check_writable_folder

    root = Path(root)
    if root.exists() and not root.is_dir():
        raise UserInputError(f"{flag} {root}: is a file, not a folder; give a new folder for the subject (e.g. "
                             f"{flag} {_suggest_new(root)})")
    check_writable_folder(root, "subject folder", flag)


def prepare_folder(root: Path, flag: str = "-o") -> None:
    """Create `root` (and its parents) once the checks have passed."""
    try:
        Path(root).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserInputError(f"{flag} {root}: cannot create the folder ({exc.strerror}); choose a folder you can "
                             f"write to") from None


def _read_object(path: Path) -> dict[str, Any] | None:
    """A JSON object file: None when absent, {} when unreadable or not an object."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def read_manifest(root: Path) -> dict[str, Any] | None:
    return _read_object(Path(root) / MANIFEST_FILENAME)


def recorded_identity(root: Path) -> dict[str, Any] | None:
    """What the folder says it was made from: its manifest, else (no manifest, or one cut short by a crash) what
    meta.json says; None when neither exists."""
    recorded = read_manifest(root)
    if not recorded:
        recorded = _legacy_manifest(Path(root)) or recorded
    return recorded


def _legacy_manifest(root: Path) -> dict[str, Any] | None:
    """What a subject written before manifest.json says about itself (meta.json), in the manifest's terms."""
    meta = _read_object(root / META_FILENAME)
    if not meta:
        return meta
    source = meta.get("source") if isinstance(meta.get("source"), dict) else {}
    settings = {"preprocess.fps": meta.get("fps"), "preprocess.size": meta.get("width"),
                "preprocess.sample_rate_hz": meta.get("sample_rate_hz")}
    return {"kind": KIND, "legacy": True, "video": {"path": source.get("path"), "sha256": source.get("sha256")},
            "audio": {"path": source["audio_path"]} if source.get("audio_path") else None,
            "settings": {k: v for k, v in settings.items() if v is not None}}


def differences(recorded: dict[str, Any], identity: Identity) -> list[str]:
    """What differs between the folder's recorded identity and this run's, one phrase each."""
    out = []
    video = recorded.get("video") or {}
    if video.get("sha256") != identity.video["sha256"]:
        out.append(f"the video: this run's {identity.video['path']} is not the file it was made from "
                   f"({video.get('path') or 'unknown'})")
    audio = recorded.get("audio")
    if recorded.get("legacy"):  # meta.json records the --audio path only, no hash
        audio_differs = bool(audio) != bool(identity.audio)
    else:
        audio_differs = (audio or {}).get("sha256") != (identity.audio or {}).get("sha256")
    if audio_differs:
        was = f"--audio {audio.get('path')}" if audio else "the video's own sound"
        now = f"--audio {identity.audio['path']}" if identity.audio else "the video's own sound"
        out.append(f"the audio: it was made from {was}, this run uses {now}")
    settings = recorded.get("settings") or {}
    for key, value in identity.settings.items():
        if key in settings and settings[key] != value and not _same_number(settings[key], value):
            out.append(f"{key}: {settings[key]} in the folder, {value} in this run")
    return out


def _same_number(a: Any, b: Any) -> bool:
    return isinstance(a, int | float) and isinstance(b, int | float) and float(a) == float(b)


def _listing(root: Path) -> str:
    from synctalk.io.outputs import folder_listing

    return folder_listing(root, ignored=IGNORED)


def _suggest_new(root: Path) -> Path:
    """A path beside `root` that does not exist yet: subject_2, subject_3... (notes.txt → notes_subject)."""
    root = Path(root)
    base = f"{root.stem}_subject" if root.is_file() else root.name or "subject"
    for k in range(2, 100):
        candidate = root.parent / f"{base}_{k}" if not root.is_file() or k > 2 else root.parent / base
        if not candidate.exists():
            return candidate
    return root.parent / f"{base}_new"


def check_owner(root: Path, identity: Identity, overwrite: bool = False, flag: str = "-o", announce: bool = True
                ) -> str:
    """May this run write its subject into `root`? Returns "new" (absent or empty: start a subject), "same" (the
    same input and settings: resume) or "replace" (another subject, and `overwrite` allows replacing it); raises
    UserInputError, having written nothing, when the folder is not a subject folder or is another subject."""
    root = Path(root)
    if not root.is_dir() or not [p for p in root.iterdir() if p.name not in IGNORED]:
        return "new"
    recorded = recorded_identity(root)
    if recorded is None or recorded.get("kind") != KIND:
        raise UserInputError(
            f"{flag} {root}: this folder is not empty ({_listing(root)}) and is not a synctalk subject folder (no "
            f"{MANIFEST_FILENAME} or {META_FILENAME}). synctalk preprocess writes only into a new or empty folder, so "
            f"that none of your files is overwritten: give a new folder, e.g. {flag} {_suggest_new(root)}")
    diff = differences(recorded, identity)
    if not diff:
        return "same"
    what = "; ".join(diff)
    made_from = (recorded.get("video") or {}).get("path") or "another input"
    if overwrite:
        if announce:
            log.warning("%s: replacing the subject made from %s (%s): every step is redone", root, made_from, what)
        return "replace"
    raise UserInputError(
        f"{flag} {root}: this folder holds a subject made from {made_from}, and this run differs in {what}. "
        f"Nothing was changed. To keep that subject, write this one to a new folder (e.g. {flag} "
        f"{_suggest_new(root)}); to replace it, run the same command with --overwrite")


def write_manifest(root: Path, identity: Identity) -> None:
    atomic_write_json(Path(root) / MANIFEST_FILENAME, identity.to_json())


def sweep_temporaries(root: Path) -> list[Path]:
    """Delete the temporary files that an interrupted (killed) run left behind: `.<name>.<random>.tmp<ext>` in the
    subject folder, qa/ and the per-frame folders. Call it only while holding the folder's lock."""
    root = Path(root)
    removed = []
    for folder in (root, root / "qa", *(root / d for d in FRAME_DIR_EXTENSIONS)):
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if TEMPORARY.match(entry.name) and entry.is_file():
                entry.unlink(missing_ok=True)
                removed.append(entry)
    if removed:
        log.info("%s: removed %d temporary file(s) left by an interrupted run (e.g. %s)", root, len(removed),
                 removed[0].relative_to(root))
    return removed
