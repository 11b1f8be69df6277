"""The Go client (clients/go) against a live server holding the contract fixture.

Runs `go vet` and `go test` with SKEWLESS_ADDR set, so that the live-server tests in
clients/go/skewless run, and checks that the committed generated Go code is what
`make gen-go` produces from protos/. Skipped only when the `go` toolchain is absent.
"""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from skewless.online.embedded_redis import EmbeddedRedis

try:
    from . import client_harness as h
except ImportError:
    import client_harness as h  # type: ignore[no-redef]

GO = h.go_binary()
pytestmark = pytest.mark.skipif(GO is None, reason="the go toolchain is not installed")


def _go_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "GOFLAGS": "-buildvcs=false", "GOTOOLCHAIN": "local", **extra}
    env.pop("SKEWLESS_ADDR", None)
    env.update(extra)
    return env


def _run_go(*args: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess[str]:
    assert GO is not None
    return subprocess.run(
        [GO, *args],
        cwd=h.GO_DIR,
        env=_go_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def fixture(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[h.Fixture]:
    with h.serve_fixture(tmp_path_factory.mktemp("go-fixture"), redis_server.url) as served:
        yield served


def test_go_vet_is_clean() -> None:
    result = _run_go("vet", "./...")
    assert result.returncode == 0, result.stderr


def test_go_tests_pass_against_live_server(fixture: h.Fixture) -> None:
    result = _run_go("test", "-count=1", "-v", "./...", SKEWLESS_ADDR=fixture.addr)
    assert result.returncode == 0, result.stdout + result.stderr
    # The live tests ran rather than skipped.
    assert "--- PASS: TestLiveFeatureService" in result.stdout, result.stdout
    # Tokens and TLS files, checked at a loopback server that records the header.
    assert "--- PASS: TestWithTokenSourceIsAskedForEveryCall" in result.stdout, result.stdout
    assert "--- PASS: TestTokenAndCallCredentialsOverTLSFiles" in result.stdout, result.stdout
    assert "SKIP" not in result.stdout, result.stdout


def test_go_example_prints_the_canonical_answers(fixture: h.Fixture, tmp_path: Path) -> None:
    binary = tmp_path / "example"
    built = _run_go("build", "-o", str(binary), "./cmd/example")
    assert built.returncode == 0, built.stderr
    result = subprocess.run(
        [str(binary), "-addr", fixture.addr], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    assert [a["name"] for a in answers["lookups"]] == [lk.name for lk in h.LOOKUPS]
    assert answers == h.python_stub_answers(fixture.addr)


def test_generated_go_code_is_up_to_date(tmp_path: Path) -> None:
    tools = h.ROOT / ".tools" / "bin"
    plugins = {name: tools / name for name in ("protoc-gen-go", "protoc-gen-go-grpc")}
    if not all(p.exists() for p in plugins.values()):
        gobin = tmp_path / "bin"
        for module in (
            "google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12",
            "google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.1",
        ):
            installed = _run_go("install", module, GOBIN=str(gobin))
            assert installed.returncode == 0, installed.stderr
        plugins = {name: gobin / name for name in plugins}
    module = "github.com/skewless/skewless/clients/go"
    protos = sorted(
        str(p.relative_to(h.ROOT)) for p in (h.ROOT / "protos" / "skewless").rglob("*.proto")
    )
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            "protos",
            f"--plugin=protoc-gen-go={plugins['protoc-gen-go']}",
            f"--plugin=protoc-gen-go-grpc={plugins['protoc-gen-go-grpc']}",
            f"--go_out={out}",
            f"--go_opt=module={module}",
            f"--go-grpc_out={out}",
            f"--go-grpc_opt=module={module}",
            *protos,
        ],
        cwd=h.ROOT,
        check=True,
    )
    committed = h.GO_DIR / "gen" / "skewless" / "v1"
    fresh = out / "gen" / "skewless" / "v1"
    names = sorted(p.name for p in fresh.iterdir())
    assert names == sorted(p.name for p in committed.iterdir()), "run `make gen-go`"
    _, mismatch, errors = filecmp.cmpfiles(committed, fresh, names, shallow=False)
    stale = mismatch + errors
    assert not stale, f"stale generated Go code {stale}: run `make gen-go`"
