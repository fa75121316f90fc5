"""One atomic writer for every file koala writes (reports, logs, manifests, PNGs, models).

A file is written under a temporary name in its own folder and renamed over the target, so a
reader (or a resumed run) sees the old file or the new one, never half of one. Local paths are
fsynced before the rename; other file systems (``gs://``...) go through ``tf.io.gfile``, whose
rename is the best a bucket offers.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import sys
from collections.abc import Callable, Iterator

from koala.core.errors import KoalaError


def _is_remote(path: str) -> bool:
    """A path with a scheme (gs://, s3://, hdfs://, ram://): tf.io.gfile's, not the OS's."""
    return "://" in path


def fsync_file(path) -> None:
    """Flushes a finished local file to disk; a bucket path (``gs://``...) has nothing to
    flush (its rename is all it offers)."""
    path = os.fspath(path)
    if _is_remote(path):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, data: str | bytes | Callable[[str], None], *, fsync: bool = True) -> None:
    """Writes ``data`` to ``path`` atomically.

    Args:
      path: the target file; its folder must exist.
      data: text (UTF-8), bytes, or a function that writes the file at the temporary path it
        is given (``model.save``, ``image.save``, ...).
      fsync: flush the data to disk before the rename (local paths).
    """
    path = os.fspath(path)
    folder, base = os.path.split(path)
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{base}")
    if _is_remote(path):
        import tensorflow as tf  # only for bucket paths

        if callable(data):
            raise ValueError(f"{path}: a writer function needs a local path")
        with tf.io.gfile.GFile(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        tf.io.gfile.rename(tmp, path, overwrite=True)
        return
    try:
        if callable(data):
            data(tmp)
        else:
            with open(tmp, "wb") as f:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
        if fsync:
            fsync_file(tmp)
        os.replace(tmp, path)
    except OSError as e:
        if e.filename is None:  # a failed write or close names no file: name the target
            raise OSError(e.errno, e.strerror or str(e), path) from e
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_json(path, obj, *, indent: int = 2, ensure_ascii: bool = False) -> None:
    """``obj`` as JSON text, written atomically. ``ensure_ascii=True`` escapes non-ASCII
    text, which also writes a file name's lone surrogates (a non-UTF-8 name) exactly."""
    atomic_write(path, json.dumps(obj, indent=indent, ensure_ascii=ensure_ascii) + "\n")


LOCK_FILE = ".lock"


@contextlib.contextmanager
def exclusive(folder, what: str, *, name: str = LOCK_FILE) -> Iterator[None]:
    """Holds ``folder/.lock`` (``flock``) while the block runs, so two processes never write
    into one output folder at once: the second gets a :class:`KoalaError` naming the first
    (its PID, host, command and start time), at once. The kernel drops the lock when its
    process ends, however it ends, so the file a killed run leaves is simply taken over.
    Remote folders (``gs://``...) and systems without ``fcntl`` are not locked.

    ``what`` names the holder in the message ("another koala.train run"); ``name`` is the
    lock file's name in ``folder``.
    """
    folder = os.fspath(folder)
    try:
        import fcntl
    except ImportError:  # not POSIX
        fcntl = None
    if fcntl is None or _is_remote(folder):
        yield
        return
    fd = os.open(os.path.join(folder, name), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            raise KoalaError(f"{folder} is in use by {what} ({holder or 'another process'}); "
                             f"wait for it to end, or stop it") from None
        started = datetime.datetime.now().isoformat(timespec="seconds")
        note = (f"PID {os.getpid()} on {socket.gethostname()}, started {started}: "
                f"{' '.join(sys.argv)[:300]}")
        os.ftruncate(fd, 0)
        os.pwrite(fd, note.encode("utf-8", "replace"), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock
