"""Build the FHIR NPM package tarball of ``profiles/`` (``scripts/build-package``).

The tarball is the flat layout FHIR tools load (``package/package.json``, one
``package/<ResourceType>-<id>.json`` per artifact, ``package/.index.json``):

* every ``*.json`` file of every sub-folder of ``profiles/`` (``structuredefinitions/``,
  ``extensions/``, ``codesystems/``, ``valuesets/``, ``conceptmaps/``, ``searchparameters/``,
  ``operations/``, ...) is copied byte for byte; a folder named ``examples`` is left out;
* ``.index.json`` (``index-version`` 1) lists each artifact with ``filename``,
  ``resourceType``, ``id``, ``url``, ``version``, ``kind`` and ``type`` (the last four when the
  artifact has them);
* the build is reproducible: members sorted by name, fixed modification time, owner and mode,
  and a gzip header without a time stamp, so the same sources give the same bytes.

Two artifacts with the same file name, a file that is not a JSON object with a
``resourceType`` and an ``id``, or a ``package.json`` without ``name`` and ``version`` stop the
build (:class:`PackageError`).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import sys
import tarfile
from pathlib import Path
from typing import Any

from server.fhir.definitions import PROFILES

ROOT = PROFILES.parent
# 2026-01-01T00:00:00Z: the modification time of every member (reproducible builds)
MTIME = 1767225600
_EXCLUDED_FOLDERS = frozenset({"examples"})
_INDEX_FIELDS = ("url", "version", "kind", "type")


class PackageError(Exception):
    """The sources cannot be packaged as they are."""


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise PackageError(f"{path}: not a JSON object")
    return data


def collect(profiles: Path = PROFILES) -> tuple[dict[str, Any], dict[str, Path]]:
    """The package manifest and the artifact files (package file name -> source path)."""
    manifest = _load(profiles / "package.json")
    for key in ("name", "version"):
        if not isinstance(manifest.get(key), str):
            raise PackageError(f"{profiles / 'package.json'}: '{key}' is missing")
    files: dict[str, Path] = {}
    folders = sorted(p for p in profiles.iterdir() if p.is_dir())
    for folder in folders:
        if folder.name in _EXCLUDED_FOLDERS:
            continue
        for path in sorted(folder.glob("*.json")):
            if path.name in files:
                raise PackageError(
                    f"two artifacts are named {path.name}: {files[path.name]}, {path}"
                )
            files[path.name] = path
    return manifest, files


def index_entry(filename: str, resource: dict[str, Any]) -> dict[str, Any]:
    rtype, rid = resource.get("resourceType"), resource.get("id")
    if not isinstance(rtype, str) or not isinstance(rid, str):
        raise PackageError(f"{filename}: a resource needs a resourceType and an id")
    entry: dict[str, Any] = {"filename": filename, "resourceType": rtype, "id": rid}
    for key in _INDEX_FIELDS:
        value = resource.get(key)
        if isinstance(value, str):
            entry[key] = value
    return entry


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(f"package/{name}")
    info.size = len(data)
    info.mtime = MTIME
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def build(out_dir: Path, profiles: Path = PROFILES) -> Path:
    """Write ``<out_dir>/<name>-<version>.tgz`` and return its path."""
    manifest, files = collect(profiles)
    contents = {name: path.read_bytes() for name, path in files.items()}
    entries = [index_entry(name, _load(files[name])) for name in sorted(contents)]
    index = {"index-version": 1, "files": entries}
    members = {
        "package.json": (profiles / "package.json").read_bytes(),
        ".index.json": (json.dumps(index, indent=2, ensure_ascii=False) + "\n").encode(),
        **contents,
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        # package.json first (some loaders read it before the rest), then by name
        _member(tar, "package.json", members.pop("package.json"))
        for name in sorted(members):
            _member(tar, name, members[name])
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{manifest['name']}-{manifest['version']}.tgz"
    with target.open("wb") as sink:
        with gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=0) as gz:
            gz.write(raw.getvalue())
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="build-package", description="Build the FHIR NPM package of profiles/."
    )
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="output folder (dist/)")
    parser.add_argument(
        "--profiles", type=Path, default=PROFILES, help="package sources (profiles/)"
    )
    args = parser.parse_args(argv)
    try:
        target = build(args.out, args.profiles)
    except PackageError as exc:
        print(f"build-package: {exc}", file=sys.stderr)
        return 1
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
