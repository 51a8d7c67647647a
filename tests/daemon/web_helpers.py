"""Helpers for the plate page's tests: plain HTTP (no client that tidies paths), this machine's
non-loopback address, and a headless Chromium driven by selenium."""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = ("/usr/bin/chromedriver",)


def request(port: int, method: str, path: str, body: Any = None, *, host: str = "127.0.0.1",
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request, the path sent exactly as given."""
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        data = None
        sent = dict(headers or {})
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        connection.request(method, path, body=data, headers=sent)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def get_json(port: int, path: str, **kwargs: Any) -> Any:
    status, _, body = request(port, "GET", path, **kwargs)
    assert status == 200, (path, status, body)
    return json.loads(body)


def raw_get(port: int, target: str, host: str = "127.0.0.1") -> tuple[int, bytes]:
    """A GET whose request target goes out byte for byte (for path-traversal attempts)."""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
                     .encode("latin-1"))
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    answer = b"".join(chunks)
    status = int(answer.split(b" ", 2)[1])
    return status, answer.partition(b"\r\n\r\n")[2]


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (the default route's), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def chromium_paths() -> tuple[str, str]:
    """The Chromium and chromedriver to drive, or a skip naming what is missing."""
    browser = next((p for p in CHROMIUM if Path(p).exists()), shutil.which("chromium"))
    driver = next((p for p in CHROMEDRIVER if Path(p).exists()), shutil.which("chromedriver"))
    missing = [name for name, found in (("chromium", browser), ("chromedriver", driver))
               if not found]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (apt-get install chromium "
                    "chromium-driver, as `make test-tools` does) to run the browser test")
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("selenium not installed (the test extra: pip install -e '.[test]')")
    return browser, driver


@contextlib.contextmanager
def headless_chromium(width: int = 1600, height: int = 1100) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={width},{height}", "--disable-extensions"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield chrome
    finally:
        chrome.quit()


def console_errors(chrome: Any) -> list[dict]:
    return [entry for entry in chrome.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
