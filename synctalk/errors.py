"""Typed errors. The library raises these; only the CLI turns them into exit codes.

Every message says what is wrong, where (file, frame, key) and what to do about it.
"""


class SyncTalkError(Exception):
    """A failure the user can act on. CLI exit code 1."""

    exit_code = 1


class UserInputError(SyncTalkError):
    """Bad usage or bad input (a file, a config key, a flag). CLI exit code 2."""

    exit_code = 2


class ConfigError(UserInputError):
    """A config file or override is invalid."""


class MediaError(UserInputError):
    """A video or audio file cannot be read as needed (missing, corrupt, no audio track...)."""


class DatasetError(UserInputError):
    """A subject directory breaks the contract in docs/dataset.md."""


class AssetError(SyncTalkError):
    """A downloadable model file is missing, corrupt, or cannot be fetched."""


class DiskFullError(SyncTalkError):
    """A write failed because the disk (or the user's quota) is full; the message names the path, the space left
    and what was being written. The previous version of the file is intact (writes are atomic)."""
