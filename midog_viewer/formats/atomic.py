"""Output files appear whole or not at all, never over the review database, never over a non-file.

Every file midog-viewer writes for a user (exports, the counts CSV, evaluation results) goes through
here. The bytes go to an unnamed temporary file in the target's folder (Linux ``O_TMPFILE``; a hidden
named one where the file system has none), are fsynced, and only then take the target's name with
``os.replace``, so a kill or a full disk leaves the previous file byte for byte. A named temporary file
that a kill left behind (possible only in the instant between naming and renaming, or on file systems
without unnamed files) is removed by the next write of the same target. Targets are refused, in one
sentence, when they are the review database or one of its ``-wal``/``-shm``/``-journal`` files under any
spelling (symlink, hard link, ``..``), when they exist and are not regular files (a device such as
``/dev/full``, a folder, a FIFO), when they are read-only files (which ``open("w")`` would not have
replaced either), or when their folder does not exist. A replaced file keeps its permission bits. OS errors (full disk, read-only
folder, permission) become one :class:`~midog_viewer.errors.AnnotationFormatError` line.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, TextIO

from midog_viewer.errors import AnnotationFormatError

#: The files SQLite keeps beside a database (WAL mode, and a rollback journal): the one list of them.
SIDE_FILES = ("-wal", "-shm", "-journal")
#: Hidden temporary names: ``.<target name>.<pid>-<8 hex>.midog-tmp<target suffix>``.
_TEMP = re.compile(r"^\.(?P<name>.*)\.(?P<pid>\d+)-[0-9a-f]{8}\.midog-tmp(\.[^.]*)?$")
_NAME_KEEP = 100  # characters of the target's name kept in a temporary name (file names stop at 255 bytes)
_NO_TMPFILE = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOTSUP}


def store_files(db_path: str | os.PathLike) -> tuple[Path, ...]:
    """The review database and its companion files (beside the link, too, if it is one): what no output may be."""
    paths = []
    for db in dict.fromkeys((Path(db_path), Path(os.path.realpath(db_path)))):
        paths.extend(db.with_name(db.name + end) for end in ("", *SIDE_FILES))
    return tuple(paths)


def _same(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def refuse_protected(path: str | os.PathLike, protect: Iterable[str | os.PathLike], what: str | None = None) -> None:
    """Refuse ``path`` when it is, under any spelling or link, one of ``protect`` (a review database's files)."""
    _refuse_protected(Path(path), os.path.realpath(path), protect, what)


def _refuse_protected(path: Path, real: str, protect: Iterable[str | os.PathLike], what: str | None) -> None:
    protect = [Path(p) for p in protect]
    for guarded in protect:
        if _same(real, os.path.realpath(guarded)):
            what = what or f"the review database {protect[0].name} (or one of its files)"
            raise AnnotationFormatError(
                f"{path} is {what}; writing there would destroy it, so choose another output path."
            )


def check_target(
    path: str | os.PathLike, protect: Iterable[str | os.PathLike] = (), what: str | None = None
) -> Path:
    """The real path a write to ``path`` would replace, or a one-line refusal (see the module docstring).

    ``protect``: paths no output may be (default: a review database's :func:`store_files`, which ``what``
    names in the refusal otherwise).
    """
    path = Path(path)
    real = os.path.realpath(path)
    _refuse_protected(path, real, protect, what)
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise AnnotationFormatError(f"cannot write {path}: {exc.strerror or exc}.") from exc
    if mode is not None and not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise AnnotationFormatError(f"{path} is {kind}; midog-viewer only replaces regular files.")
    if mode is not None and (not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) or not os.access(real, os.W_OK)):
        raise AnnotationFormatError(f"{path} is read-only; midog-viewer does not replace it.")
    folder = os.path.dirname(real)
    if not os.path.isdir(folder):
        raise AnnotationFormatError(f"cannot write {path}: the folder {path.parent} does not exist.")
    return Path(real)


def make_folder(path: str | os.PathLike, protect: Iterable[str | os.PathLike] = ()) -> Path:
    """Create an output folder (and its parents) unless it is a protected path or an existing file."""
    path = Path(path)
    real = os.path.realpath(path)
    _refuse_protected(path, real, protect, None)
    if os.path.exists(real) and not os.path.isdir(real):
        raise AnnotationFormatError(f"{path} exists and is not a folder; name a folder (or a .geojson file).")
    try:
        os.makedirs(real, exist_ok=True)
    except OSError as exc:
        raise AnnotationFormatError(f"cannot create the folder {path}: {exc.strerror or exc}.") from exc
    return Path(real)


def _temp_name(target: str) -> str:
    suffix = os.path.splitext(target)[1][:16]
    return f".{target[:_NAME_KEEP]}.{os.getpid()}-{secrets.token_hex(4)}.midog-tmp{suffix}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _sweep(dir_fd: int, target: str) -> None:
    """Remove temporary files of ``target`` whose writer was killed."""
    with contextlib.suppress(OSError):
        for entry in os.listdir(dir_fd):
            match = _TEMP.match(entry)
            if match and match["name"] == target[:_NAME_KEEP] and not _alive(int(match["pid"])):
                with contextlib.suppress(OSError):
                    os.unlink(entry, dir_fd=dir_fd)


def _create(folder: Path, dir_fd: int, target: str) -> tuple[int, str | None]:
    """An unnamed file in ``folder`` (None as its name), or a hidden named one where that is impossible."""
    if hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd"):
        try:
            return os.open(folder, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o666), None
        except OSError as exc:
            if exc.errno not in _NO_TMPFILE:
                raise
    name = _temp_name(target)
    return os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o666, dir_fd=dir_fd), name


def _fsync_folder(dir_fd: int) -> None:
    try:
        os.fsync(dir_fd)
    except OSError as exc:  # some file systems cannot sync a folder; the rename itself is still atomic
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise


def _keep_mode(fd: int, target: Path) -> None:
    """A replaced file keeps its permission bits."""
    with contextlib.suppress(FileNotFoundError):
        os.fchmod(fd, stat.S_IMODE(os.stat(target).st_mode))


def _cannot_write(path: Path, exc: OSError) -> AnnotationFormatError:
    return AnnotationFormatError(f"cannot write {path}: {exc.strerror or exc}.")


@contextlib.contextmanager
def open_binary(path: str | os.PathLike, protect: Iterable[str | os.PathLike] = ()) -> Iterator[BinaryIO]:
    """A binary file whose contents replace ``path`` atomically when the block ends without an error."""
    path = Path(path)
    real = check_target(path, protect)
    try:
        dir_fd = os.open(real.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise _cannot_write(path, exc) from exc
    temp: str | None = None
    handle: BinaryIO | None = None
    try:
        _sweep(dir_fd, real.name)
        fd, temp = _create(real.parent, dir_fd, real.name)
        handle = os.fdopen(fd, "wb")
        _keep_mode(fd, real)
        yield handle
        handle.flush()
        os.fsync(fd)
        if temp is None:  # give the unnamed file a hidden name, then rename it over the target
            temp = _temp_name(real.name)
            os.link(f"/proc/self/fd/{fd}", temp, dst_dir_fd=dir_fd, follow_symlinks=True)
        os.replace(temp, real.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        temp = None
        _fsync_folder(dir_fd)
    except OSError as exc:
        raise _cannot_write(path, exc) from exc
    finally:
        if handle is not None:
            with contextlib.suppress(OSError, ValueError):
                handle.close()
        if temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=dir_fd)
        os.close(dir_fd)


@contextlib.contextmanager
def open_text(
    path: str | os.PathLike, protect: Iterable[str | os.PathLike] = (), newline: str | None = None
) -> Iterator[TextIO]:
    """UTF-8 text that replaces ``path`` atomically (``newline=""`` for the csv module)."""
    with open_binary(path, protect) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", newline=newline)
        yield text
        text.flush()
        text.detach()


def write_bytes(path: str | os.PathLike, data: bytes, protect: Iterable[str | os.PathLike] = ()) -> None:
    """Replace ``path`` with ``data`` atomically."""
    with open_binary(path, protect) as handle:
        handle.write(data)


def write_text(path: str | os.PathLike, text: str, protect: Iterable[str | os.PathLike] = ()) -> None:
    """Replace ``path`` with UTF-8 ``text`` atomically."""
    write_bytes(path, text.encode("utf-8"), protect)


def replace_file(
    path: str | os.PathLike, write: Callable[[Path], None], protect: Iterable[str | os.PathLike] = ()
) -> None:
    """For writers that need a file name: ``write(temp)`` a hidden file beside ``path``, then rename it over.

    The temporary name keeps the target's suffix, so writers that pick a format by it (matplotlib) still do.
    """
    path = Path(path)
    real = check_target(path, protect)
    temp = real.with_name(_temp_name(real.name))
    try:
        dir_fd = os.open(real.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise _cannot_write(path, exc) from exc
    try:
        _sweep(dir_fd, real.name)
        write(temp)
        fd = os.open(temp, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _keep_mode(fd, real)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, real)
        _fsync_folder(dir_fd)
    except OSError as exc:
        raise _cannot_write(path, exc) from exc
    finally:
        with contextlib.suppress(OSError):
            temp.unlink()
        os.close(dir_fd)
