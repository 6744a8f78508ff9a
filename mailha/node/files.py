"""Atomic file writes: a reader never sees half a file."""

import contextlib
import os
import tempfile


def replace_file(path, text, mode=0o644, mtime=None, encoding="utf-8"):
    """Write `path` in one step: a temporary file beside it, renamed over it.

    `text` is a str (written in `encoding`) or bytes. Creates the directory.
    `mode` is the new file's permissions; `mtime` (epoch seconds) dates the
    file (access and modification time) before the rename. Raises OSError; the temporary file is removed on failure."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.")
    try:
        if isinstance(text, bytes):
            with os.fdopen(fd, "wb") as handle:
                handle.write(text)
        else:
            with os.fdopen(fd, "w", encoding=encoding) as handle:
                handle.write(text)
        os.chmod(temporary, mode)
        if mtime is not None:
            os.utime(temporary, (mtime, mtime))
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def append_line(path, line, mode=0o644):
    """Append one line with one O_APPEND write: concurrent writers never
    interleave within a line. Raises OSError."""
    if not line.endswith("\n"):
        line += "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)
