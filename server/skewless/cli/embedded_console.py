"""How the console of `skewless serve --ui-port` reaches the server it runs next to.

The console is a gRPC client of the server like any other: against `server.tls` it
connects over TLS and verifies the server's certificate (with `ui.ca_file`, else the
system roots); under mutual TLS it presents `ui.cert_file`. There is no other way in:
no plaintext port is opened for it. What cannot work is said before anything starts
(mutual TLS and no client certificate, unreadable files), and what only a handshake
shows (a CA that does not verify the certificate) is said as soon as the server is up.
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from skewless.core.config import ConsoleTLS, RepoConfig
from skewless.core.errors import DefinitionError

if TYPE_CHECKING:
    from skewless.console import ConsoleSettings

__all__ = ["console_settings", "name_to_verify", "probe"]

#: Seconds the start-up check waits for the server's answer.
PROBE_TIMEOUT = 5.0


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DefinitionError(
            f"{setting}: cannot read {path} ({exc.strerror or exc})", reason="INVALID_CONFIG"
        ) from None


def _no_password() -> bytes:
    return b""


def _check_pem(ui: ConsoleTLS) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ui.ca_file is not None:
        try:
            context.load_verify_locations(cafile=ui.ca_file)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise DefinitionError(
                f"ui.ca_file: {ui.ca_file} holds no PEM CA certificate ({exc})",
                reason="INVALID_CONFIG",
            ) from None
    if ui.cert_file is not None and ui.key_file is not None:
        try:
            context.load_cert_chain(ui.cert_file, ui.key_file, password=_no_password)
        except (ssl.SSLError, OSError) as exc:
            raise DefinitionError(
                f"ui: {ui.cert_file} and {ui.key_file} are not a PEM certificate and its "
                f"unencrypted private key ({exc})",
                reason="INVALID_CONFIG",
            ) from None


def _host(target: str) -> str:
    host = target.rsplit(":", 1)[0]
    return host.strip("[]")


def name_to_verify(cert_file: Path, host: str) -> str | None:
    """The name the console verifies in the server's certificate when dialing `host`.

    None when the certificate covers `host` (or cannot be read: the handshake says why),
    else a DNS name it holds, `localhost` first.
    """
    try:
        certificate = x509.load_pem_x509_certificates(cert_file.read_bytes())[0]
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, IndexError, x509.ExtensionNotFound):
        return None
    dns = [n.lower() for n in names.get_values_for_type(x509.DNSName)]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host.lower() in dns:
            return None
    else:
        if address in names.get_values_for_type(x509.IPAddress):
            return None
    if "localhost" in dns:
        return "localhost"
    for name in dns:
        # A wildcard covers one label: any name under it verifies the same certificate.
        return "skewless" + name[1:] if name.startswith("*.") else name
    return None


def console_settings(config: RepoConfig, target: str) -> ConsoleSettings:
    """The console's settings to reach `config`'s server at `target`.

    Raises:
        DefinitionError: The console could not connect (mutual TLS without `ui.cert_file`),
            or a `ui` file is unreadable or not PEM; the message says what to set.

    """
    from skewless.console import ConsoleSettings

    tls = config.server_tls
    if tls is None:
        return ConsoleSettings(target=target)
    ui = config.ui_tls or ConsoleTLS()
    if tls.mutual and (ui.cert_file is None or ui.key_file is None):
        raise DefinitionError(
            "the console of --ui-port is a client of the server, and server.tls.client_ca_file "
            "makes the server require a client certificate: set ui.cert_file and ui.key_file "
            "in skewless.yaml to a certificate that CA issued (and ui.ca_file to the CA of "
            "server.tls.cert_file), or serve without --ui-port and run `skewless ui` with "
            "--root-ca, --client-cert and --client-key",
            reason="INVALID_CONFIG",
        )
    _check_pem(ui)
    return ConsoleSettings(
        target=target,
        tls=True,
        root_certificates=_read(ui.ca_file, "ui.ca_file") if ui.ca_file else None,
        certificate_chain=_read(ui.cert_file, "ui.cert_file") if ui.cert_file else None,
        private_key=_read(ui.key_file, "ui.key_file") if ui.key_file else None,
        server_name=ui.server_name or name_to_verify(tls.cert_file, _host(target)),
    )


def _hints(config: RepoConfig, details: str) -> list[str]:
    ui = config.ui_tls or ConsoleTLS()
    text = details.lower()
    hints: list[str] = []
    if "verify" in text or "issuer" in text or "self signed" in text:
        if ui.ca_file is None:
            hints.append(
                "set ui.ca_file in skewless.yaml to the CA certificate that issued "
                "server.tls.cert_file (without it the console trusts the system roots only)"
            )
        else:
            hints.append(f"ui.ca_file ({ui.ca_file}) is not the CA of server.tls.cert_file")
    if "peer name" in text or "hostname" in text or "subject alt" in text:
        hints.append(
            (
                f"ui.server_name ({ui.server_name}) is not"
                if ui.server_name
                else "set ui.server_name to"
            )
            + " a name server.tls.cert_file holds (its subject alternative names)"
        )
    if not hints and config.server_tls is not None and config.server_tls.mutual:
        hints.append(
            "ui.cert_file must be issued by server.tls.client_ca_file "
            f"({config.server_tls.client_ca_file})"
        )
    return hints


def probe(settings: ConsoleSettings, config: RepoConfig) -> str | None:
    """Calls the server's health check over the console's channel.

    Returns:
        None when the server answered (any status but UNAVAILABLE: the channel works),
        else a message saying why the console cannot reach it and what to set.

    """
    credentials = settings.channel_credentials()
    options = settings.channel_options()
    if credentials is None:
        channel = grpc.insecure_channel(settings.target, options=options)
    else:
        channel = grpc.secure_channel(settings.target, credentials, options=options)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        stub.Check(health_pb2.HealthCheckRequest(), timeout=PROBE_TIMEOUT)
    except grpc.RpcError as exc:
        code = exc.code()
        if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return None
        details = str(exc.details() or "")
        hints = "; ".join(_hints(config, details)) if settings.secure else ""
        return (
            f"the console cannot reach the server at {settings.target} "
            f"({code.name}: {details})" + (f": {hints}" if hints else "")
        )
    finally:
        channel.close()
    return None
