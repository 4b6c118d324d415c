"""Crash-safe output files: an output appears complete under its name, or not at all.

`AtomicFile(path)` gives a seekable binary file to write; `commit()` makes it visible as `path`,
`abort()` (or an exception in a `with` block) discards it. Nothing half-written is ever left under
`path`, and nothing is left at all after a crash, even `kill -9`:

* Where the file system allows it (Linux: ext4, xfs, btrfs, tmpfs), the data goes to an unnamed file
  (`O_TMPFILE`) that is linked into place on commit. A killed writer leaves no name behind.
* Elsewhere it goes to a hidden temporary `.NAME.<random>.tmp` beside the output, locked (`flock`)
  by its writer for as long as the writer runs. Every new writer of the same output removes the
  temporaries whose lock is free, i.e. whose writer is gone.

Commit without `overwrite` uses `link()`, which fails if the name exists, so of two processes that
write the same output at once one wins and the other gets `OutputExistsError`; with `overwrite` both
finish and the output is one of the two complete files (`rename()` is atomic). Any `OSError` while
writing (a full disk: ENOSPC, or EFBIG under RLIMIT_FSIZE) propagates to the caller after the
temporary data is discarded. Errors carry plain messages; callers turn them into their own types.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import glob
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

__all__ = ["AtomicFile", "OutputExistsError", "atomic_write", "clean_stale", "temp_glob"]

_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_AT_SYMLINK_FOLLOW = 0x400
# st_dev of directories where an unnamed file could not be linked: use named temporaries there.
_NO_UNNAMED: set[int] = set()


class OutputExistsError(FileExistsError):
    """The output exists and overwriting was not asked for (also: another writer got there first)."""


def temp_glob(path: str | os.PathLike[str]) -> str:
    """Glob pattern (in the output's directory) of the named temporaries of `path`."""
    return f".{glob.escape(Path(path).name)}.*.tmp"


def _lock_is_free(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def clean_stale(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the named temporaries of `path` whose writer is no longer running; returns them.

    A writer holds an exclusive `flock` on its temporary until it commits or aborts, and the kernel
    drops the lock when the process dies however it dies, so a free lock means a dead writer. A live
    writer's temporary (in this process or another) is left alone.
    """
    path = Path(path)
    removed = []
    try:
        candidates = sorted(path.parent.glob(temp_glob(path)))
    except OSError:
        return removed
    for tmp in candidates:
        try:
            fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue  # vanished, a symlink, or unreadable: not ours to judge
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or not _lock_is_free(fd):
                continue
            # Unlink only the file we locked (the name might have been replaced meanwhile).
            if os.stat(tmp, follow_symlinks=False).st_ino == st.st_ino:
                os.unlink(tmp)
                removed.append(tmp)
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def _link_unnamed(fd: int, target: str) -> None:
    """Give the unnamed file `fd` the name `target` (fails with FileExistsError if it exists)."""
    # linkat(fd, "", AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH; the /proc route works for everyone
    # where /proc is mounted. Try both.
    if _LIBC is not None and hasattr(_LIBC, "linkat"):
        if _LIBC.linkat(fd, b"", _AT_FDCWD, os.fsencode(target), _AT_EMPTY_PATH) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(err, os.strerror(err), target)
    os.link(f"/proc/self/fd/{fd}", target, follow_symlinks=True)


def _unnamed_supported(directory: str, fd: int, name: str) -> bool:
    """Whether an unnamed file in `directory` can be linked: probed once per file system with a
    short-lived name (removed at once; named like a temporary of output `name`, so that even a crash
    at that instant leaves nothing the next writer does not clean)."""
    dev = os.fstat(fd).st_dev
    if dev in _NO_UNNAMED:
        return False
    probe_fd = os.open(directory, os.O_TMPFILE | os.O_WRONLY, 0o600)
    probe = os.path.join(directory, f".{name}.probe-{secrets.token_hex(6)}.tmp")
    try:
        _link_unnamed(probe_fd, probe)
    except OSError:
        _NO_UNNAMED.add(dev)
        return False
    finally:
        os.close(probe_fd)
    try:
        os.unlink(probe)
    except OSError:
        pass
    return True


class AtomicFile:
    """A new output file that becomes visible as `path` only on `commit()`.

    `af.file` is a seekable binary file object (`w+b`) to write to; `af.fileno()` its descriptor.
    Raises OutputExistsError at once if `path` exists and not `overwrite`, and OSError if the
    temporary cannot be created. `unnamed=False` forces a named temporary (for tests and for callers
    that must hand a path to another library).
    """

    def __init__(self, path: str | os.PathLike[str], *, overwrite: bool = False, unnamed: bool = True,
                 mode: int = 0o666):
        self.path = Path(path)
        self.overwrite = overwrite
        if not overwrite and os.path.lexists(self.path):
            raise OutputExistsError(errno.EEXIST, "output already exists", os.fspath(self.path))
        directory = os.path.dirname(os.path.abspath(self.path))
        self._dir = directory
        clean_stale(self.path)
        self.tmp: Path | None = None  # the named temporary, when there is one
        self._committed = False
        fd = self._open_unnamed(directory, mode) if unnamed else None
        if fd is None:
            fd = self._open_named(directory, mode)
        self.file: BinaryIO = os.fdopen(fd, "w+b")

    def _open_unnamed(self, directory: str, mode: int) -> int | None:
        flag = getattr(os, "O_TMPFILE", None)
        if flag is None:
            return None
        try:
            fd = os.open(directory, flag | os.O_RDWR, mode)
        except OSError as e:
            if e.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
                return None  # no O_TMPFILE on this kernel or file system
            raise
        try:
            if _unnamed_supported(directory, fd, self.path.name):
                fcntl.flock(fd, fcntl.LOCK_EX)  # guards the short-lived name used by overwrite
                return fd
        except OSError:
            pass
        os.close(fd)
        return None

    def _open_named(self, directory: str, mode: int) -> int:
        while True:
            tmp = Path(directory) / f".{self.path.name}.{secrets.token_hex(6)}.tmp"
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                # A cleaner may have taken the name between open and lock: then start again.
                if os.fstat(fd).st_nlink > 0:
                    self.tmp = tmp
                    return fd
            except OSError:
                pass
            os.close(fd)

    # -- writing

    def fileno(self) -> int:
        return self.file.fileno()

    def write(self, data: bytes) -> int:
        return self.file.write(data)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    @property
    def closed(self) -> bool:
        return self.file.closed

    # -- finishing

    def commit(self) -> None:
        """Flush, fsync and put the file in place. On any error the data is discarded, `path` is left
        as it was, and the error propagates (OutputExistsError if `path` appeared meanwhile)."""
        if self._committed:
            return
        if self.file.closed:
            raise ValueError("commit() after abort()")
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            if self.tmp is None:
                self._commit_unnamed()
            else:
                self._commit_named()
        except BaseException:
            self.abort()
            raise
        self._committed = True
        self.file.close()  # releases the lock
        self._fsync_dir()

    def _commit_unnamed(self) -> None:
        fd = self.file.fileno()
        if not self.overwrite:
            try:
                _link_unnamed(fd, os.fspath(self.path))
            except FileExistsError:
                raise OutputExistsError(errno.EEXIST, "output already exists", os.fspath(self.path)) from None
            return
        # rename() is the only atomic replace, and it needs a name: link one (our lock covers it).
        self.tmp = Path(self._dir) / f".{self.path.name}.{secrets.token_hex(6)}.tmp"
        _link_unnamed(fd, os.fspath(self.tmp))
        os.replace(self.tmp, self.path)
        self.tmp = None

    def _commit_named(self) -> None:
        assert self.tmp is not None
        if self.overwrite:
            os.replace(self.tmp, self.path)
        else:
            try:
                os.link(self.tmp, self.path)  # fails if the name exists: never clobbers
            except FileExistsError:
                raise OutputExistsError(errno.EEXIST, "output already exists", os.fspath(self.path)) from None
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV):
                    raise
                # No hard links here (e.g. some FUSE/SMB mounts): best effort check, then rename.
                if os.path.lexists(self.path):
                    raise OutputExistsError(errno.EEXIST, "output already exists",
                                            os.fspath(self.path)) from None
                os.replace(self.tmp, self.path)
            else:
                os.unlink(self.tmp)
        self.tmp = None

    def _fsync_dir(self) -> None:
        try:
            dfd = os.open(self._dir, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dfd)
        except OSError:
            pass
        finally:
            os.close(dfd)

    def __del__(self) -> None:
        # Dropped without commit(): discard, so a named temporary does not wait for a later cleaner.
        try:
            if hasattr(self, "file"):
                self.abort()
        except Exception:  # noqa: BLE001 - at interpreter exit modules may already be gone
            pass

    def abort(self) -> None:
        """Discard the data; `path` is untouched. Never raises; safe to call more than once."""
        if self._committed:
            return
        if self.tmp is not None:
            try:
                os.unlink(self.tmp)
            except OSError:
                pass
            self.tmp = None
        try:
            self.file.close()  # an unnamed file vanishes with its last descriptor
        except OSError:
            pass


def atomic_write(path: str | Path, write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Call `write(tmp)` to produce a temporary file next to `path`, then rename it onto `path`.

    Raises FileExistsError (before writing anything) if `path` exists and `overwrite` is false.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists (use --force to overwrite)")
    # A named, locked temporary (the callback needs a path): clean_stale removes it if we die.
    out = AtomicFile(path, overwrite=overwrite, unnamed=False)
    try:
        assert out.tmp is not None
        write(out.tmp)
        out.commit()
    except OutputExistsError:
        raise FileExistsError(f"{path} already exists (use --force to overwrite)") from None
    finally:
        out.abort()  # no-op after a commit
    return path
