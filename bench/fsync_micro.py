"""Cost of a durable commit on this disk: a tiny loop of SQLite inserts, one transaction
each, with the server's settings (WAL, synchronous=FULL), against synchronous=OFF, and a
raw write+fsync loop. Prints one JSON object.

    .venv/bin/python bench/fsync_micro.py [--dir DIR] [--n 500]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import tempfile
import time


def sqlite_loop(path: str, synchronous: str, n: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body BLOB)")
    body = os.urandom(1600)
    for _ in range(20):  # warm-up
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (body) VALUES (?)", (body,))
        conn.execute("COMMIT")
    start = time.perf_counter()
    for _ in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (body) VALUES (?)", (body,))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed / n * 1e6


def fsync_loop(path: str, n: int) -> float:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    block = os.urandom(4096)
    try:
        start = time.perf_counter()
        for _ in range(n):
            os.write(fd, block)
            os.fsync(fd)
        return (time.perf_counter() - start) / n * 1e6
    finally:
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="folder on the disk to measure (default: a temp dir)")
    parser.add_argument("--n", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        full = sqlite_loop(os.path.join(tmp, "full.db"), "FULL", args.n)
        off = sqlite_loop(os.path.join(tmp, "off.db"), "OFF", args.n)
        raw = fsync_loop(os.path.join(tmp, "raw.bin"), args.n)
    print(json.dumps({
        "n": args.n,
        "sqlite_wal_full_commit_us": round(full, 1),
        "sqlite_wal_off_commit_us": round(off, 1),
        "fsync_cost_per_commit_us": round(full - off, 1),
        "raw_write_fsync_4k_us": round(raw, 1),
        "max_serial_durable_commits_per_s": round(1e6 / full),
    }))


if __name__ == "__main__":
    main()
