"""The package layering is pinned: an import against the data flow fails this test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = ("core", "registry", "offline", "online", "materialization", "server", "console")


def _lint_imports(extra_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    roots = [str(ROOT / r) for r in SOURCE_ROOTS] + [str(ROOT / "clients" / "python")]
    if extra_path is not None:
        roots.insert(0, str(extra_path))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(roots)}
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(lint), "--no-cache", "--config", str(ROOT / "pyproject.toml")],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )


def test_every_package_imports_only_the_layers_below_it() -> None:
    result = _lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_an_import_against_the_grain_breaks_the_contract(tmp_path: Path) -> None:
    # A core module that imports the server: the contract must catch it.
    bad = tmp_path / "skewless" / "core"
    bad.mkdir(parents=True)
    (bad / "against_the_grain.py").write_text("import skewless.server.app\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "skewless.core.against_the_grain -> skewless.server.app" in result.stdout


def test_the_console_may_not_import_the_server_side(tmp_path: Path) -> None:
    # The console is a gRPC client: importing the core (or anything server-side) breaks it.
    bad = tmp_path / "skewless" / "console"
    bad.mkdir(parents=True)
    (bad / "reaches_in.py").write_text("import skewless.core.config\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "skewless.console.reaches_in -> skewless.core.config" in result.stdout
