"""Headless Chromium (the OS packages ``chromium`` and ``chromium-driver``, installed by
``scripts/os-packages``) driven through chromedriver's W3C WebDriver protocol, over httpx: a
session, navigation, form fields, clicks, the page's URL and text, screenshots."""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


class Browser:
    def __init__(self, driver: str, session: str) -> None:
        self._http = httpx.Client(base_url=f"{driver}/session/{session}", timeout=60)

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        response = self._http.request(method, path, json=body)
        value = response.json().get("value")
        if response.status_code != 200:
            raise RuntimeError(f"WebDriver {method} {path}: {value}")
        return value

    def go(self, url: str) -> None:
        self._call("POST", "/url", {"url": url})

    @property
    def url(self) -> str:
        return str(self._call("GET", "/url"))

    @property
    def text(self) -> str:
        return str(self._call("GET", "/source"))

    def _element(self, css: str) -> str:
        return str(self._call("POST", "/element", {"using": "css selector", "value": css})[ELEMENT])

    def type(self, css: str, text: str) -> None:
        self._call("POST", f"/element/{self._element(css)}/value", {"text": text})

    def click(self, css: str) -> None:
        self._call("POST", f"/element/{self._element(css)}/click", {})

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self._call("GET", "/screenshot")))

    def wait_for_text(self, wanted: str, timeout: float = 30) -> str:
        """The page's source once it holds ``wanted`` (a click that submits a form returns
        before the next page has loaded)."""
        deadline = time.monotonic() + timeout
        while True:
            page = self.text
            if wanted in page or time.monotonic() >= deadline:
                return page
            time.sleep(0.1)

    def wait_for_url(self, prefix: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            url = self.url
            if url.startswith(prefix):
                return url
            time.sleep(0.1)
        raise TimeoutError(f"the browser stayed at {self.url}, not {prefix}")


@contextmanager
def chromium(port: int, log: Path) -> Iterator[Browser]:
    """A headless Chromium session (chromedriver on ``port``)."""
    driver = shutil.which("chromedriver")
    binary = shutil.which("chromium")
    if driver is None or binary is None:
        raise RuntimeError("chromium and chromedriver are missing: run scripts/os-packages")
    output = log.open("wb")
    process = subprocess.Popen([driver, f"--port={port}"], stdout=output,
                               stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/status", timeout=2).json()["value"]["ready"]:
                    break
            except (httpx.TransportError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"chromedriver did not start: {log.read_text()}")
            time.sleep(0.2)
        options = {"binary": binary, "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=900,760", "--no-first-run", "--disable-extensions"]}
        created = httpx.post(f"{base}/session", timeout=120, json={"capabilities": {
            "alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}})
        session = created.json()["value"]["sessionId"]
        browser = Browser(base, session)
        try:
            yield browser
        finally:
            browser.close()
            httpx.delete(f"{base}/session/{session}", timeout=60)
    finally:
        process.terminate()
        process.wait(timeout=15)
        output.close()
