"""Connection limits over a real server process (uvicorn): header size and count (431), the
URL's length (414), requests that trickle in (408), gzip bodies limited once decompressed
(413). Each refusal is an OperationOutcome; the server's memory does not grow with what a
client sends past the limits."""

from __future__ import annotations

import gzip
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.cli.conftest import Server, serve

TIMEOUT = 2  # request_timeout_seconds of the server under test


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve(
        tmp_path_factory.mktemp("limits"),
        request_timeout_seconds=str(TIMEOUT),
        max_body_bytes=str(1024 * 1024),
    ) as server:
        yield server


def _rss(server: Server) -> int:
    for line in Path(f"/proc/{server.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=15)
    return sock


def _answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """The status, headers and body of the one answer on ``sock`` (read to its close)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return status, {k.lower(): v for k, v in headers.items()}, body


def _send_until_answered(sock: socket.socket, head: bytes, chunks: Iterator[bytes]) -> int:
    """Send ``head`` then ``chunks`` until the server stops reading; the bytes sent."""
    sock.sendall(head)
    sent = len(head)
    for chunk in chunks:
        try:
            sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += len(chunk)
    return sent


def _refusal(sock: socket.socket, status: int, code: str) -> None:
    got, headers, body = _answer(sock)
    assert got == status, body[:300]
    assert headers["connection"] == "close"
    outcome = orjson.loads(body)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == code


def test_one_64_mb_header_is_refused_431_without_being_held(limited: Server) -> None:
    before = _rss(limited)
    with _connect(limited) as sock:
        head = b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\nX-Big: "
        sent = _send_until_answered(sock, head, (b"a" * 65536 for _ in range(1024)))
        _refusal(sock, 431, "too-costly")
    assert sent < 64 * 1024 * 1024
    assert _rss(limited) - before < 16 * 1024 * 1024


def test_100000_headers_are_refused_431(limited: Server) -> None:
    before = _rss(limited)
    with _connect(limited) as sock:
        head = b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\n"
        lines = (
            b"".join(b"X-H%d: v\r\n" % n for n in range(k, k + 1000))
            for k in range(0, 100_000, 1000)
        )
        _send_until_answered(sock, head, lines)
        _refusal(sock, 431, "too-costly")
    assert _rss(limited) - before < 16 * 1024 * 1024


def test_a_url_longer_than_the_limit_is_refused_414(limited: Server) -> None:
    with _connect(limited) as sock:
        sock.sendall(b"GET /fhir/Patient?name=" + b"a" * 40_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        _refusal(sock, 414, "too-costly")


def test_requests_within_the_limits_are_served(limited: Server) -> None:
    headers = {f"X-H{n}": "v" * 100 for n in range(90)}  # 90 fields, ~10 KB
    response = httpx.get(f"{limited.base}/metadata?_elements=id", headers=headers, timeout=30)
    assert response.status_code == 200
    # several requests on one connection, each well within the deadline
    with httpx.Client(timeout=30) as client:
        for _ in range(3):
            assert client.get(f"{limited.base}/metadata?_elements=id").status_code == 200


def test_headers_that_trickle_in_are_timed_out_408(limited: Server) -> None:
    with _connect(limited) as sock:
        sock.sendall(b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        _refusal(sock, 408, "timeout")
        assert time.monotonic() - started >= TIMEOUT - 0.5


def test_a_body_that_trickles_in_is_timed_out_408(limited: Server) -> None:
    body = orjson.dumps({"resourceType": "Patient", "active": True})
    count = f"{limited.base}/Patient?_summary=count"
    before = httpx.get(count, timeout=30).json()["total"]
    with _connect(limited) as sock:
        sock.sendall(
            b"POST /fhir/Patient HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body[:5]
        )
        _refusal(sock, 408, "timeout")
    # nothing was written, and the application saw a timeout, not a defect
    assert httpx.get(count, timeout=30).json()["total"] == before
    log = limited.log.read_text(errors="replace")
    assert "unhandled" not in log and '"status":408' in log


def _post_gzip(server: Server, data: bytes, encoding: str = "gzip") -> httpx.Response:
    return httpx.post(
        f"{server.base}/Patient",
        content=data,
        headers={"Content-Type": "application/fhir+json", "Content-Encoding": encoding},
        timeout=30,
    )


def test_a_gzip_body_is_read_decompressed(limited: Server) -> None:
    patient = orjson.dumps({"resourceType": "Patient", "name": [{"family": "Zipped"}]})
    response = _post_gzip(limited, gzip.compress(patient))
    assert response.status_code == 201, response.text
    assert response.json()["name"] == [{"family": "Zipped"}]
    # two gzip members, one after the other, are one body
    half = len(patient) // 2
    two = gzip.compress(patient[:half]) + gzip.compress(patient[half:])
    assert _post_gzip(limited, two).status_code == 201


def test_a_gzip_body_is_limited_after_decompression_413(limited: Server) -> None:
    bomb = gzip.compress(b" " * (200 * 1024 * 1024), compresslevel=9)  # 200 MB in ~200 KB
    assert len(bomb) < 1024 * 1024
    before = _rss(limited)
    response = _post_gzip(limited, bomb)
    assert response.status_code == 413
    assert response.json()["resourceType"] == "OperationOutcome"
    assert _rss(limited) - before < 32 * 1024 * 1024


@pytest.mark.parametrize(
    ("data", "encoding", "status"),
    [
        (b"not gzip at all", "gzip", 400),
        (gzip.compress(b"{}")[:-6], "gzip", 400),
        (b"{}", "br", 415),
    ],
)
def test_a_body_that_is_not_the_encoding_it_claims_is_refused(
    limited: Server, data: bytes, encoding: str, status: int
) -> None:
    response = _post_gzip(limited, data, encoding)
    assert response.status_code == status, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
