# Copied by scripts/vendor_metric_code.py from amrg/fileio.py
# (verbatim).
# Do not edit here: edit the source and run `python scripts/vendor_metric_code.py`
# (tests/test_metric_modules.py fails while a copy differs from what its source gives).
"""Writing outputs so that nothing a user has is lost or half-written: files and folders are built under a
temporary name beside their target and renamed into place at the end; a folder being written is locked, so that two
writers never both succeed into it."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


logger = logging.getLogger(__name__)


class FolderLockedError(OSError):
    """Another process is writing the folder (it holds the folder's lock)."""


def lock_path(target: str | os.PathLike) -> Path:
    """The lock file of `target`: `<target>.lock`, beside it."""
    target = Path(target)
    return target.with_name(target.name + ".lock")


@contextmanager
def folder_lock(target: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive lock on the folder `target` for the block: `fcntl.flock` on `<target>.lock` (created beside
    it, removed at the end). A second process fails at once with `FolderLockedError` naming the folder, the lock
    file and the holder's process id. The lock dies with its process, so a killed writer never blocks the next one
    (its lock file stays behind, unlocked, and is reused). The lock is not re-entrant: taking it again in the same
    process fails like a second process."""
    target = Path(target)
    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(descriptor)
            raise FolderLockedError(f"output folder {target} is being written by another process (pid {holder}, "
                                    f"lock {path}): wait for it to finish or choose another folder") from None
        # The holder we raced may have removed its lock file (and another process created a new one) between our
        # open and our lock: the lock counts only if it is on the file now at `path`.
        try:
            same = os.stat(path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(descriptor)
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
    try:
        yield path
    finally:
        # Removed while still locked, so that no process can lock this file after we let go of it.
        path.unlink(missing_ok=True)
        os.close(descriptor)


@contextmanager
def staged_file(path: str | os.PathLike, newline: str | None = None) -> Iterator[TextIO]:
    """Yield a UTF-8 text handle on a temporary file beside `path`; when the block succeeds the file replaces `path`,
    when it fails it is removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", newline=newline, dir=path.parent,
                                         prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            yield handle
        os.replace(handle.name, path)
    finally:
        if os.path.exists(handle.name):
            os.unlink(handle.name)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write text through `staged_file`."""
    with staged_file(path) as handle:
        handle.write(text)


def write_json(path: str | os.PathLike, payload: dict) -> None:
    """Write JSON through `staged_file`."""
    write_text(path, json.dumps(payload, indent=2))


def write_json_lines(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """One JSON object per line, through `staged_file`."""
    write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def _staging_prefix(target: Path, kind: str) -> str:
    return f".{target.name}.{kind}."


def staging_folders(target: str | os.PathLike) -> list[Path]:
    """The temporary folders `staged_folder` makes beside `target` (`.<name>.staging.XXXXXXXX` for the new content,
    `.<name>.retired.XXXXXXXX` for the old one during the swap) that exist now."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    # tempfile.mkdtemp's names: the prefix and 8 characters of [a-z0-9_]. Matched whole, so that another target
    # whose name starts with this one's (`out.v2` beside `out`) never matches.
    pattern = re.compile("|".join(re.escape(_staging_prefix(target, kind)) + r"[a-z0-9_]{8}"
                                  for kind in ("staging", "retired")))
    return sorted(path for path in target.parent.iterdir() if pattern.fullmatch(path.name) and path.is_dir())


def clean_stale_staging(target: str | os.PathLike) -> list[Path]:
    """Remove the staging folders of `target` that a killed writer left behind; call it holding `target`'s lock
    (then no live writer owns any of them). A killed swap that had already moved the old content aside while
    `target` is missing gets the old content back (the killed command never reported success). Returns what was
    removed."""
    target = Path(target)
    removed = []
    for folder in staging_folders(target):
        retired = folder / target.name
        if folder.name.startswith(_staging_prefix(target, "retired")) and retired.exists() and not target.exists():
            os.replace(retired, target)
            logger.warning("restored %s from %s, where an interrupted write had moved it", target, folder)
        shutil.rmtree(folder)
        logger.warning("removed %s, left behind by an interrupted write of %s", folder, target)
        removed.append(folder)
    return removed


@contextmanager
def staged_folder(target: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside `target`; when the block succeeds it replaces `target`, when it fails
    it is removed and `target` is untouched. A non-empty `target` is refused unless `overwrite`.

    `target` is locked for the whole block (`folder_lock`): a second writer fails at once instead of both reporting
    success with one result lost; staging folders left by a killed writer are removed first
    (`clean_stale_staging`)."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise ValueError(f"output path exists and is not a folder: {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(target):
        clean_stale_staging(target)
        # Checked holding the lock: a writer that finished since our call began is seen here.
        if target.exists() and not target.is_dir():
            raise ValueError(f"output path exists and is not a folder: {target}")
        if target.is_dir() and any(target.iterdir()) and not overwrite:
            raise ValueError(f"output folder is not empty: {target} (pass overwrite=True / --overwrite to replace it)")
        staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(target, "staging"), dir=target.parent))
        try:
            yield staging
            if target.exists():
                retired = Path(tempfile.mkdtemp(prefix=_staging_prefix(target, "retired"), dir=target.parent))
                os.replace(target, retired / target.name)
                os.replace(staging, target)
                shutil.rmtree(retired)
            else:
                os.replace(staging, target)
        finally:
            if staging.exists():
                shutil.rmtree(staging)


__all__ = ["FolderLockedError", "clean_stale_staging", "folder_lock", "lock_path", "staged_file", "staged_folder",
           "staging_folders", "write_json", "write_json_lines", "write_text"]
