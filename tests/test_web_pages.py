"""What `digest web` and `digest serve` say when they start: where they listen, how to stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from .conftest import Workdir, free_port


def first_lines(args: list[str], workdir: Workdir, until: str, seconds: float = 30) -> tuple[list[str], subprocess.Popen]:
    process = subprocess.Popen([sys.executable, "-m", "digest", *args], cwd=workdir.path, env={**os.environ, **workdir.env},
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if until in line:
            return lines, process
    process.kill()
    raise AssertionError(f"digest {' '.join(args)} said: {lines}")


@pytest.mark.parametrize("command", ["web", "serve"])
def test_web_and_serve_say_where_they_listen_and_how_to_stop(workdir: Workdir, command: str) -> None:
    port = free_port()
    workdir.env["DIGEST_BASE_URL"] = "https://digest.example.org"
    lines, process = first_lines([command, "--host", "127.0.0.1", "--port", str(port)], workdir, "to stop")
    try:
        assert lines[0] == f"Serving {'the web endpoints' if command == 'web' else 'the scheduler and the web endpoints'} on http://127.0.0.1:{port} " \
                           "(links in emails point to https://digest.example.org)."
        assert lines[1] == "Press Ctrl+C (or send SIGTERM) to stop."
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # it listens where it said
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise AssertionError(f"nothing answers on port {port}")
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
