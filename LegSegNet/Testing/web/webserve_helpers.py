"""Helpers of the browser tests: Chromium's path, a `legsegnet serve` process on a free port."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "/usr/bin/chromium")


def chromium_path():
    """Debian's Chromium (Playwright's own browser download is not used); LEGSEGNET_CHROMIUM overrides."""
    for candidate in (os.environ.get("LEGSEGNET_CHROMIUM"), *CHROMIUM_CANDIDATES):
        found = candidate and shutil.which(candidate)
        if found:
            return found
    if os.environ.get("CI"):
        pytest.fail("CI: no Chromium found (.ci/run installs Debian's chromium); the browser tests must run in CI")
    pytest.skip("no Chromium found (apt-get install chromium, or set LEGSEGNET_CHROMIUM); browser tests not run")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`legsegnet serve` in a process of its own; its first stdout line is the URL it printed."""

    def __init__(self, data, *args):
        self.port = free_port()
        self.log = open(Path(data).parent / f"serve-{self.port}.log", "w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "LegSegNetLib", "serve", "--data", str(data), "--port", str(self.port), *args],
            stdout=subprocess.PIPE, stderr=self.log, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.url = self.process.stdout.readline().strip().rsplit(" at ", 1)[-1]
        self.wait_ready()

    def wait_ready(self, timeout=90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"legsegnet serve exited {self.process.returncode}: {self.log.read()[-2000:]}")
            try:
                urllib.request.urlopen(self.url, timeout=5).read()
                return
            except urllib.error.HTTPError:
                return                # answering (a refusal is an answer)
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"legsegnet serve did not answer at {self.url} within {timeout} s")

    def local_url(self, path="/index.html"):
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
