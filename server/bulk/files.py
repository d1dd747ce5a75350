"""Where an export's files live: one folder per job under the export folder
(``Settings.export_dir``; default next to the SQLite file, or a folder per database in the
system's temporary folder), ``<Type>-<n>.ndjson`` (and ``Deleted<Type>-<n>.ndjson``) files
and ``state.json``, the types already finished (what a worker that takes over a dead one's
job keeps).

The folder of a job whose row is gone (purged after its retention, or never recorded) is
removed by ``sweep`` at each kick-off."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from server.settings import Settings

FILE_NAME = re.compile(r"^[A-Za-z]{1,64}-\d{1,6}\.ndjson$")
_JOB = re.compile(r"^[0-9a-f]{32}$")
_STATE = "state.json"


def export_root(settings: Settings) -> Path:
    """The folder that holds every export's folder."""
    if settings.export_dir:
        return Path(settings.export_dir)
    url = settings.database_url
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///").partition("?")[0])
        return path.parent / f"{path.name}.exports"
    return Path(tempfile.gettempdir()) / "calaim-fhir-exports" / _database_key(url)


def _database_key(url: str) -> str:
    """A folder name of its own for each PostgreSQL database (host, port and name; never the
    credentials): the kick-off's sweep removes the folders of jobs its store does not know, so
    two stores must never share one."""
    parts = urlsplit(url)
    where = f"{parts.hostname or ''}:{parts.port or ''}/{parts.path.lstrip('/')}?{parts.query}"
    return hashlib.blake2b(where.encode(), digest_size=8).hexdigest()


def job_folder(root: Path, job: str) -> Path:
    if not _JOB.match(job):
        raise ValueError("not a job id")
    return root / job


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def load_state(folder: Path) -> dict[str, Any]:
    """``{"types": {type: [[file, count], ...]}, "deleted": {type: [[file, count], ...]}}``
    of the types finished so far (their resources' files and their deletions' files)."""
    try:
        state: dict[str, Any] = orjson.loads((folder / _STATE).read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return {"types": {}}
    return state


def save_state(folder: Path, state: dict[str, Any]) -> None:
    """Replace the state file atomically (a worker may die at any point)."""
    temporary = folder / f"{_STATE}.tmp"
    with open(temporary, "wb") as out:
        out.write(orjson.dumps(state))
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, folder / _STATE)


def sweep(root: Path, known: Callable[[str], bool]) -> int:
    """Remove the job folders under ``root`` whose job ``known`` denies; how many."""
    if not root.is_dir():
        return 0
    removed = 0
    for child in root.iterdir():
        if child.is_dir() and _JOB.match(child.name) and not known(child.name):
            remove(child)
            removed += 1
    return removed
