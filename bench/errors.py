"""The one error boundary of every subcommand: what a user can fix is one line on
the terminal and exit status 2; anything else is one line too, with the
traceback kept in a log file it names (never a bare traceback on the terminal).
"""
import errno
import os
import sys
import tempfile
import time


class UserError(Exception):
    """Bad input or an unusable environment, said in one line."""


# what to do about an operating-system error, by errno
_ADVICE = {
    errno.ENOSPC: "the disk is full: free space or choose another directory",
    errno.EDQUOT: "the disk quota is exhausted: free space or choose another directory",
    errno.EACCES: "permission denied: choose a directory you can write to",
    errno.EPERM: "operation not permitted: choose a directory you can write to",
    errno.EROFS: "the file system is read-only: choose a writable directory",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EISDIR: "it is a directory, not a file",
    errno.ENOENT: "no such file or directory",
    errno.EEXIST: "it exists already",
}


def describe_os_error(e: OSError) -> str:
    """``path: what happened (what to do)`` for an OSError."""
    where = e.filename if e.filename is not None else ""
    what = e.strerror or str(e)
    advice = _ADVICE.get(e.errno)
    text = f"{where}: {what}" if where else what
    return f"{text} ({advice})" if advice and advice not in text else text


def writable_dir(path, what="--results-dir"):
    """Create ``path`` if needed and prove a file can be written in it (then removed),
    before any work: a refusal is a UserError naming the option."""
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=path)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise UserError(f"{what} {path}: {describe_os_error(e)}") from None
    return path


def log_traceback(command) -> str:
    """Write the current exception's traceback to a log file; its path."""
    import traceback
    from ..models.cache import cache_root
    for folder in (os.path.join(cache_root(), "logs"), tempfile.gettempdir()):
        try:
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, f"mnist-bench-{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log")
            with open(path, "w", encoding="utf-8") as f:
                f.write(" ".join(sys.argv) + "\n\n")
                traceback.print_exc(file=f)
            return path
        except OSError:
            continue
    return "(no log: no writable directory)"
