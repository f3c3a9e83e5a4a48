"""Output paths, checked before any work starts; one writer per directory; moving a directory aside.

Every command that writes (--out, --json, --plot) calls `check_output_file` or
`check_output_dir` first, so a long benchmark or training run never ends in a
traceback because its output cannot be written: a path under a regular file, a
directory where a file should go, or a read-only parent is a PulseError up front.
"""

from __future__ import annotations

import errno
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pulse.errors import PulseError

LOCK = ".pulse-lock"
FULL_DISK = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def _check_parents(path: Path, option: str) -> None:
    """The nearest existing ancestor must be a writable directory (nothing on the way is a file)."""
    probe = path.parent
    while not probe.exists():
        if probe.is_symlink():
            raise PulseError(f"{option} {path}: {probe} is a broken symbolic link; remove it or pick another path.")
        probe = probe.parent
    if not probe.is_dir():
        raise PulseError(f"{option} {path}: {probe} is a file, so nothing can be created under it; "
                         "pick another path or move the file.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PulseError(
            f"{option} {path}: cannot create files in {probe} (permission denied); pick a writable location."
        )


def check_output_file(path: str | Path | None, option: str = "--out") -> None:
    """A file `path` can be written (or replaced) later; None passes."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise PulseError(f"{option} {path} is a directory; give a file name, e.g. {path / 'results.json'}.")
    _check_parents(path, option)
    if path.exists() and not os.access(path, os.W_OK):
        raise PulseError(f"{option} {path}: the file exists and is not writable; pick another path.")


def check_output_files(**paths: str | Path | None) -> None:
    """check_output_file for each keyword (its name is the option: json_out → --json)."""
    for option, path in paths.items():
        check_output_file(path, "--" + option.removesuffix("_out").replace("_", "-"))


def check_output_dir(path: str | Path, option: str = "--out") -> None:
    """A directory `path` exists and is writable, or can be created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PulseError(f"{option} {path} is a file, not a directory; pick another path.")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise PulseError(f"{option} {path}: the directory is not writable; pick another path.")
        return
    _check_parents(path, option)


def move_aside(path: Path) -> Path:
    """Rename `path` to PATH.replaced-<UTC time> (atomic, same parent); returns the new name."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    for n in range(1000):
        target = path.with_name(f"{path.name}.replaced-{stamp}" + (f"-{n}" if n else ""))
        if not target.exists():
            try:
                path.rename(target)
            except OSError as err:
                raise PulseError(f"cannot move {path} aside to {target}: {err.strerror or err}.") from None
            return target
    raise PulseError(f"cannot move {path} aside: too many earlier copies beside it; remove some.")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


class DirLock:
    """One writer per directory: an exclusive lock on DIR/.pulse-lock holding the owner's pid.

    On POSIX the lock is an flock, which the kernel drops when its process dies, so a
    lock left by a killed run is taken over without guessing; the pid inside is for the
    message. Elsewhere the file is created exclusively and a dead owner's file is taken over.
    """

    def __init__(self, directory: str | Path):
        self.path = Path(directory) / LOCK
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # pragma: no cover (Windows)
            return self._acquire_exclusive()
        for _ in range(100):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise PulseError(self._busy(owner)) from None
            # the file may have been removed by its previous owner between open and flock: retry on the new one
            if os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self._fd = fd
                return None
            os.close(fd)
        raise PulseError(f"{self.path}: could not take the lock; another process keeps replacing it.")

    def _acquire_exclusive(self) -> None:  # pragma: no cover (Windows)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                owner = self.path.read_text(errors="replace").strip()
                if owner.isdigit() and not _alive(int(owner)):
                    self.path.unlink(missing_ok=True)
                    continue
                raise PulseError(self._busy(owner or "unknown")) from None
            os.write(fd, f"{os.getpid()}\n".encode())
            self._fd = fd
            return
        raise PulseError(self._busy("unknown"))

    def _busy(self, owner: str) -> str:
        return (f"{self.path.parent} is being written by another process (pid {owner}); two writers would mix "
                "their files. Wait for it to finish, stop it, or write to another --out directory.")

    def release(self) -> None:
        if self._fd is None:
            return
        # unlink before unlocking, so a waiter never locks a file that is about to vanish
        try:
            if os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                self.path.unlink()
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> DirLock:  # noqa: PYI034 (a final class)
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class DiskFull(PulseError):
    """The device ran out of space (or quota) during a write; nothing partial was left behind."""


def full_disk(err: BaseException) -> bool:
    """Is this error a full disk or an exhausted quota (whatever library raised it)?"""
    if isinstance(err, OSError) and err.errno in FULL_DISK:
        return True
    return "No space left on device" in str(err) or "Disk quota exceeded" in str(err)


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call write(tmp_path) then rename tmp_path over `path` (same directory, so the rename is atomic).

    On any failure the temporary file is removed and `path` is left as it was; a full
    disk is a PulseError saying so.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        if full_disk(err):
            raise DiskFull(f"no space left on the device to write {path}; nothing was changed. "
                           "Free some space and run the command again.") from None
        raise
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        usual_mode(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if full_disk(err):
            raise DiskFull(f"no space left on the device to write {path}; " + (
                f"the previous {path.name} is intact" if path.exists() else "nothing was written there") +
                " and no partial file was left. Free some space and run the command again.") from None
        raise


def usual_mode(path: str | Path) -> None:
    """Give `path` the mode a plain open() would have (0666 less the umask): mkstemp, and writers that go through a
    temporary file (safetensors' save_file), leave 0600."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
