"""docs/tutorial.md runs: every `sh` and `python` block, in order, against a real server.

Shell blocks run in bash with `set -euo pipefail`, each continuing in the folder and
with the exported variables the previous one left (the first starts at the checkout's
root, as the tutorial says). A block after `<!-- tutorial: background -->` is the server:
it runs in the background until the end. Python blocks run with this interpreter in the
shell's current folder. A `text` block right after a shell block is its expected output.
The tutorial's port 6566 becomes a free port (and the server's metrics are off), so the
test never collides with a server already running on this machine.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from skewless.client import Client

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorial.md"
_FENCE = re.compile(r"(<!-- tutorial: (\w+) -->\n)?```(\w+)\n(.*?)```\n", re.DOTALL)


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    marker: str | None


def blocks(text: str) -> list[Block]:
    return [Block(m.group(3), m.group(4), m.group(2)) for m in _FENCE.finditer(text)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Shell:
    """bash blocks that share a folder and exported variables, like one terminal."""

    def __init__(self, state: Path, env: dict[str, str]) -> None:
        self.state = state
        self.env = env
        state.write_text(f"cd {ROOT}\n")

    def script(self, code: str, *, keep_state: bool = True) -> str:
        save = f'\n{{ export -p; echo "cd \\"$PWD\\""; }} > {self.state}\n' if keep_state else ""
        return f"source {self.state}\nset -euo pipefail\n{code}{save}"

    def run(self, code: str) -> str:
        done = subprocess.run(
            ["bash", "-c", self.script(code)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, f"{code}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        return done.stdout

    def cwd(self) -> Path:
        line = self.state.read_text().strip().splitlines()[-1]
        return Path(line.removeprefix("cd ").strip('"'))


def wait_serving(target: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the tutorial's server exited"
        try:
            with Client(target, timeout=2) as client:
                client.get_registry_info()
            return
        except Exception:
            time.sleep(0.3)
    raise AssertionError("the tutorial's server did not start")


def test_the_tutorial_runs_as_written(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    shell = Shell(tmp_path / "shell-state.sh", env)
    server: subprocess.Popen[str] | None = None
    server_log = tmp_path / "server.log"
    found = blocks(TUTORIAL.read_text())
    assert [b.lang for b in found].count("python") >= 4
    previous_output: str | None = None
    try:
        for block in found:
            code = block.code.replace("6566", str(port))
            if block.lang == "text":
                if previous_output is not None:
                    assert previous_output.strip() == code.strip()
                previous_output = None
                continue
            previous_output = None
            if block.marker == "background":
                assert block.lang == "sh" and server is None
                command = code.strip() + " --metrics-port 0"
                with server_log.open("w") as log:
                    server = subprocess.Popen(
                        ["bash", "-c", shell.script(f"exec {command}", keep_state=False)],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        text=True,
                    )
                wait_serving(f"127.0.0.1:{port}", server)
            elif block.lang == "sh":
                previous_output = shell.run(code)
                if "go run" in code or "dev.skewless.client.example.Example" in code:
                    assert "FEATURE_STATUS_PRESENT" in previous_output
                if "GetOnlineFeatures" in code:
                    assert "FEATURE_STATUS_PRESENT" in previous_output
            elif block.lang == "python":
                done = subprocess.run(
                    [sys.executable, "-c", code],
                    cwd=shell.cwd(),
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
                assert done.returncode == 0, f"{code}\n--- stderr\n{done.stderr}"
            else:
                pytest.fail(f"a {block.lang} block the test cannot run")
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    assert server is not None, "the tutorial never starts a server"
