"""Writing outputs so that nothing a user has is lost or half-written: files and folders are built under a
temporary name beside their target and renamed into place at the end."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


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


@contextmanager
def staged_folder(target: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside `target`; when the block succeeds it replaces `target`, when it fails
    it is removed and `target` is untouched. A non-empty `target` is refused unless `overwrite`."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise ValueError(f"output path exists and is not a folder: {target}")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise ValueError(f"output folder is not empty: {target} (pass overwrite=True / --overwrite to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, retired / target.name)
            os.replace(staging, target)
            shutil.rmtree(retired)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
