"""Transport security of the gRPC port: TLS, mutual TLS, certificate rotation, safe binds.

`bind(server, config)` adds the one listening port of a server:

- with `server.tls` it is a TLS port whose credentials come from a certificate
  fetcher that grpc calls on every new connection. The fetcher compares the files'
  identity (inode, size, modification time) with what it loaded last and reloads them
  when they changed, so a rotated certificate (or client CA) is used by the next
  connection without a restart; connections already open keep theirs. A half-written
  rotation (a key that does not match its certificate) is logged and the previous
  certificate kept until the files are consistent again. `client_ca_file` turns on
  mutual TLS: the handshake fails for a client without a certificate from that CA.
- without it the port is plaintext, which is allowed only on a loopback address unless
  `server.insecure` (`skewless serve --insecure`) says otherwise; that case is logged
  as a warning.

Health and reflection are services of the same server, so they share the port and its
security.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

from skewless.core.config import RepoConfig, ServerTLS
from skewless.core.errors import DefinitionError

__all__ = ["CertificateFiles", "bind", "is_loopback", "plaintext_refusal", "server_credentials"]

_log = logging.getLogger(__name__)

#: (inode, size, modification time in ns) of a file, or None when it cannot be read.
_Identity = tuple[int, int, int] | None


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or a name) reaches this machine only.

    `localhost`, 127.0.0.0/8 and ::1 are loopback; wildcards (`0.0.0.0`, `::`, ``)
    are not. Another name is loopback only if every address it resolves to is.
    """
    name = host.strip().strip("[]")
    if name.lower() == "localhost":
        return True
    if not name:
        return False
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None)
    except OSError:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(
        ipaddress.ip_address(str(a).split("%", 1)[0]).is_loopback for a in addresses
    )


def plaintext_refusal(config: RepoConfig) -> str | None:
    """Why serving `config` would be refused, or None when it may be served.

    Plaintext is refused on an address other than loopback unless `server_insecure`.
    """
    if config.server_tls is not None or config.server_insecure:
        return None
    if is_loopback(config.server_host):
        return None
    return (
        f"refusing to serve plaintext on {config.server_host}, an address other machines "
        "can reach: configure server.tls (cert_file, key_file) in skewless.yaml, or accept "
        "unencrypted connections with `skewless serve --insecure` (server.insecure: true)"
    )


@dataclass(frozen=True)
class _Loaded:
    identity: tuple[_Identity, ...]
    configuration: grpc.ServerCertificateConfiguration


def _identity(path: Path) -> _Identity:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _no_password() -> bytes:
    return b""  # an encrypted key then fails to load instead of prompting on a terminal


class CertificateFiles:
    """The certificate, key and client CA files of `server.tls`, reloaded when they change.

    `fetch` is grpc's certificate-configuration fetcher: it returns a new configuration
    when the files changed since the last load, and None (keep the current one)
    otherwise or when the new files are not usable yet.
    """

    def __init__(self, tls: ServerTLS) -> None:
        """Loads the files once.

        Raises:
            DefinitionError: A file cannot be read or is not valid PEM, or the key does
                not belong to the certificate; the message names the setting.

        """
        self.tls = tls
        self._lock = threading.Lock()
        self._paths = (tls.cert_file, tls.key_file) + (
            (tls.client_ca_file,) if tls.client_ca_file is not None else ()
        )
        self._current = self._load()
        self._rejected: tuple[_Identity, ...] | None = None

    @property
    def configuration(self) -> grpc.ServerCertificateConfiguration:
        """The configuration loaded last."""
        return self._current.configuration

    def _read(self, path: Path, setting: str) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise DefinitionError(
                f"server.tls.{setting}: cannot read {path} ({exc.strerror or exc})",
                reason="INVALID_CONFIG",
            ) from exc

    def _load(self) -> _Loaded:
        tls = self.tls
        before = tuple(_identity(p) for p in self._paths)
        cert = self._read(tls.cert_file, "cert_file")
        key = self._read(tls.key_file, "key_file")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(tls.cert_file, tls.key_file, password=_no_password)
        except (ssl.SSLError, OSError) as exc:
            raise DefinitionError(
                f"server.tls: {tls.cert_file} and {tls.key_file} are not a PEM certificate "
                f"chain and its unencrypted private key ({exc})",
                reason="INVALID_CONFIG",
            ) from exc
        client_ca: bytes | None = None
        if tls.client_ca_file is not None:
            client_ca = self._read(tls.client_ca_file, "client_ca_file")
            try:
                context.load_verify_locations(cadata=client_ca.decode("ascii", "replace"))
            except (ssl.SSLError, ValueError) as exc:
                raise DefinitionError(
                    f"server.tls.client_ca_file: {tls.client_ca_file} holds no PEM CA "
                    f"certificate ({exc})",
                    reason="INVALID_CONFIG",
                ) from exc
        after = tuple(_identity(p) for p in self._paths)
        if after != before:  # rewritten while being read: read again next time
            after = ()
        return _Loaded(
            identity=after,
            configuration=grpc.ssl_server_certificate_configuration(
                [(key, cert)], root_certificates=client_ca
            ),
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Returns a new configuration if the files changed and load, else None."""
        with self._lock:
            identity = tuple(_identity(p) for p in self._paths)
            if identity == self._current.identity or identity == self._rejected:
                return None
            try:
                loaded = self._load()
            except DefinitionError as exc:
                # Mid-rotation, or a bad file: keep serving the previous certificate.
                self._rejected = identity
                _log.warning("keeping the previous TLS certificate: %s", exc.message)
                return None
            except Exception:  # never let a reload failure escape into grpc's handshake
                self._rejected = identity
                _log.exception("keeping the previous TLS certificate")
                return None
            self._current, self._rejected = loaded, None
            _log.info("reloaded the TLS certificate from %s", self.tls.cert_file)
            return loaded.configuration


def server_credentials(config: RepoConfig) -> grpc.ServerCredentials | None:
    """The credentials of the gRPC port: TLS (mTLS with a client CA), or None for plaintext.

    Raises:
        DefinitionError: A TLS file is unusable (the message names the setting).

    """
    if config.server_tls is None:
        return None
    files = CertificateFiles(config.server_tls)
    return grpc.dynamic_ssl_server_credentials(
        files.configuration,
        files.fetch,
        require_client_authentication=config.server_tls.mutual,
    )


def bind(server: grpc.aio.Server, config: RepoConfig) -> int:
    """Adds the server's port, TLS when configured; returns the bound port.

    Raises:
        DefinitionError: Plaintext on a non-loopback address without `server_insecure`,
            or an unusable TLS file.
        OSError: The address cannot be bound.

    """
    host = config.server_host
    if ":" in host and not host.startswith("["):  # an IPv6 address
        host = f"[{host}]"
    address = f"{host}:{config.server_port}"
    credentials = server_credentials(config)
    if credentials is not None:
        port = int(server.add_secure_port(address, credentials))
        mode = "mutual TLS" if config.server_tls is not None and config.server_tls.mutual else "TLS"
    else:
        refusal = plaintext_refusal(config)
        if refusal is not None:
            raise DefinitionError(refusal, reason="INSECURE_BIND_REFUSED")
        if not is_loopback(config.server_host):
            _log.warning(
                "serving PLAINTEXT on %s (--insecure): anyone who can reach it can read and "
                "write features; configure server.tls",
                config.server_host,
            )
        port = int(server.add_insecure_port(address))
        mode = "plaintext"
    if port == 0:
        raise OSError(f"could not bind {address}")
    _log.debug("bound %s:%d (%s)", config.server_host, port, mode)
    return port
