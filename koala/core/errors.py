"""The error types koala raises for problems a user can fix (bad input, bad flags, bad files).

Everything user-facing derives from :class:`KoalaError`, so a command-line tool can catch one
type, print a one-line message and exit non-zero, while programming errors still show a
traceback.
"""


class KoalaError(Exception):
    """Base class of koala's user-facing errors."""


class ImageError(KoalaError):
    """An image file that can't be used: corrupt, truncated, empty, not an image, too big.

    Attributes:
      path: the file (or a display name for in-memory bytes).
      reason: a short human-readable reason, e.g. ``"truncated image data"``.
    """

    def __init__(self, path, reason):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class WeightsError(KoalaError):
    """Pretrained weights that can't be loaded (offline, missing or mismatched file)."""


class RecordsError(KoalaError):
    """TFRecord shards or a manifest that can't be used."""


class CorruptShardError(RecordsError):
    """A shard whose bytes are damaged (checksum mismatch, truncated or corrupt record)."""

    def __init__(self, path, reason):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"corrupt shard {self.path}: {reason}")
