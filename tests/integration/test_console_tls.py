"""The console's channel credentials: TLS and mTLS against the real skewless server.

The server runs under mutual TLS with certificates generated for the run (never
committed); the console reaches it with the CA and a client certificate, and without
them its pages say UNAVAILABLE. `skewless serve --ui-port` reaches its own TLS server
with the `ui` settings of skewless.yaml, and says what is missing when it cannot.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from skewless.cli import main
from skewless.console import ConsoleServer, ConsoleSettings
from skewless.core.config import RepoConfig, ServerTLS
from skewless.registry.registry_store import RegistryStore

from . import client_harness as h
from .certs import TLSFiles, make_tls_files
from .served import ServedProcess, ServerThread, serve, write_repo


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_target(
    tmp_path_factory: pytest.TempPathFactory, redis_server: object, certs: TLSFiles
) -> Iterator[str]:
    root = tmp_path_factory.mktemp("repo")
    RegistryStore(root / ".skewless" / "registry.pb").save(h.build_registry())
    config = RepoConfig(
        root=root,
        project=h.PROJECT,
        data_dir=root / ".skewless",
        redis_url=redis_server.url,  # type: ignore[attr-defined]
        server_port=0,
        metrics_port=0,
        server_tls=ServerTLS(
            cert_file=certs.server_cert, key_file=certs.server_key, client_ca_file=certs.ca
        ),
    )
    server = ServerThread(config).start()
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        server.stop()


def overview(settings: ConsoleSettings) -> tuple[int, str]:
    console = ConsoleServer(settings, port=0).start()
    try:
        with urllib.request.urlopen(console.url + "/", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:  # its response holds the connection's socket
            return exc.code, exc.read().decode()
    finally:
        console.stop()


def test_mtls_with_the_ca_and_a_client_certificate_reaches_the_server(
    tls_target: str, certs: TLSFiles
) -> None:
    settings = ConsoleSettings.from_files(
        tls_target,
        root_ca=certs.ca,
        client_cert=certs.client_cert,
        client_key=certs.client_key,
        timeout=5,
    )
    assert settings.secure
    status, body = overview(settings)
    assert status == 200, body
    assert 'data-field="health">SERVING<' in body
    assert h.PROJECT in body and "(TLS)" in body


@pytest.mark.parametrize("with_ca", [True, False], ids=["no client certificate", "plaintext"])
def test_without_the_right_credentials_the_call_is_unavailable(
    tls_target: str, certs: TLSFiles, with_ca: bool
) -> None:
    built = ConsoleSettings.from_files(tls_target, root_ca=certs.ca if with_ca else None, timeout=3)
    status, body = overview(built)
    assert status == 503
    assert "UNAVAILABLE" in body and 'data-field="health"' not in body


def test_a_client_certificate_needs_its_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--client-cert and --client-key go together"):
        ConsoleSettings.from_files("127.0.0.1:1", client_cert=tmp_path / "client.pem")


# --- `skewless serve --ui-port` against its own TLS server ----------------------------------

_CONSOLE_LINE = re.compile(r"skewless console on (http://127\.0\.0\.1:\d+)")


def _tls_repo(root: Path, redis_url: str, tls: str, ui: str = "") -> Path:
    write_repo(root, project=h.PROJECT, redis_url=redis_url)
    with (root / "skewless.yaml").open("a") as config:
        config.write(f"server:\n  tls: {tls}\n" + (f"ui: {ui}\n" if ui else ""))
    RegistryStore(root / ".skewless" / "registry.pb").save(h.build_registry())
    return root


def _console_url(served: ServedProcess, then: str) -> str:
    """The console's URL, once the start-up check printed `then`."""
    deadline = time.monotonic() + 20
    while not ((found := _CONSOLE_LINE.search(served.output())) and then in served.output()):
        assert time.monotonic() < deadline, served.output()
        time.sleep(0.05)
    return found.group(1)


def test_serve_ui_port_reaches_a_mutual_tls_server_through_the_ui_settings(
    tmp_path: Path, redis_url: str
) -> None:
    # A certificate that names neither 127.0.0.1 nor localhost, as a production one would:
    # the console verifies the name the certificate holds, against ui.ca_file.
    files = make_tls_files(tmp_path / "certs", server_names=("features.skewless.test",))
    repo = _tls_repo(
        tmp_path / "repo",
        redis_url,
        f"{{cert_file: {files.server_cert}, key_file: {files.server_key}, "
        f"client_ca_file: {files.ca}}}",
        f"{{ca_file: {files.ca}, cert_file: {files.client_cert}, key_file: {files.client_key}}}",
    )
    with serve(repo, "--ui-port", "0") as served:
        url = _console_url(served, "skewless console reaches the server")
        assert f"reaches the server {served.target} over mutual TLS" in served.output()
        assert "error" not in served.output()
        with urllib.request.urlopen(url + "/search?q=conv_rate", timeout=10) as page:
            body = page.read().decode()
        assert page.status == 200
        assert "driver_stats:conv_rate" in body


def test_serve_ui_port_says_what_the_console_needs(
    tmp_path: Path, redis_url: str, certs: TLSFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    # Mutual TLS and no client certificate for the console: refused before anything starts.
    mutual = _tls_repo(
        tmp_path / "mutual",
        redis_url,
        f"{{cert_file: {certs.server_cert}, key_file: {certs.server_key}, "
        f"client_ca_file: {certs.ca}}}",
        f"{{ca_file: {certs.ca}}}",
    )
    assert main(["serve", str(mutual), "--port", "0", "--ui-port", "0"]) == 2
    err = capsys.readouterr().err
    assert "set ui.cert_file and ui.key_file" in err and "Traceback" not in err

    # TLS with a private CA the console was not given: the server serves, and the
    # start-up check says at once which setting is missing.
    private = _tls_repo(
        tmp_path / "private",
        redis_url,
        f"{{cert_file: {certs.server_cert}, key_file: {certs.server_key}}}",
    )
    with serve(private, "--ui-port", "0") as served:
        _console_url(served, "error:")
        output = served.output()
        assert "the console cannot reach the server" in output
        assert "set ui.ca_file in skewless.yaml to the CA certificate" in output
