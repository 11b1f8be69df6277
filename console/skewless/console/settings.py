"""How the console reaches the skewless server: target, channel credentials, call metadata.

The console is a gRPC client of the server and nothing else: everything it shows comes
from the public API, with the caller's credentials. Two things carry those credentials:

- the *channel credentials* (TLS with a root CA, optionally a client certificate for
  mTLS), fixed for the console process; and
- the *call metadata* of each request (for example `authorization: Bearer <token>`),
  which the console computes per browser request, so that each user's calls carry that
  user's identity (see `skewless.console.app.create_app`'s `caller_metadata`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

__all__ = ["DEFAULT_TARGET", "DEFAULT_UI_HOST", "DEFAULT_UI_PORT", "ConsoleSettings", "Metadata"]

#: The server the console talks to unless told otherwise.
DEFAULT_TARGET = "127.0.0.1:6566"
#: The console binds loopback only unless told otherwise.
DEFAULT_UI_HOST = "127.0.0.1"
#: The console's default HTTP port.
DEFAULT_UI_PORT = 8566

#: gRPC call metadata: (key, value) pairs, keys in lower case.
Metadata = tuple[tuple[str, str], ...]

_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ConsoleSettings:
    """Where the server is and how to authenticate to it.

    Attributes:
        target: `host:port` of the skewless gRPC server.
        tls: Use TLS (implied by `root_certificates` or a client certificate).
        root_certificates: PEM roots that verify the server; the system roots when None.
        certificate_chain: PEM client certificate, for mTLS.
        private_key: PEM private key of `certificate_chain`.
        server_name: The name to verify in the server's certificate, when it is not the
            host of `target` (e.g. dialing 127.0.0.1 a server whose certificate names
            `features.example.com`); the certificate is still verified against the roots.
        metadata: Call metadata sent with every call, before any per-user metadata.
        timeout: Deadline of each call, in seconds.

    """

    target: str = DEFAULT_TARGET
    tls: bool = False
    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = None
    server_name: str | None = None
    metadata: Metadata = field(default=())
    timeout: float = 10.0

    @classmethod
    def from_files(
        cls,
        target: str,
        *,
        tls: bool = False,
        root_ca: Path | None = None,
        client_cert: Path | None = None,
        client_key: Path | None = None,
        server_name: str | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float = 10.0,
    ) -> ConsoleSettings:
        """Builds settings from PEM file paths (as the command line takes them).

        Raises:
            ValueError: Only one of `client_cert` and `client_key` was given.
            OSError: A file cannot be read.

        """
        if (client_cert is None) != (client_key is None):
            raise ValueError("--client-cert and --client-key go together")
        return cls(
            target=target,
            tls=tls,
            root_certificates=root_ca.read_bytes() if root_ca else None,
            certificate_chain=client_cert.read_bytes() if client_cert else None,
            private_key=client_key.read_bytes() if client_key else None,
            server_name=server_name or None,
            metadata=tuple((k.lower(), v) for k, v in metadata),
            timeout=timeout,
        )

    @property
    def secure(self) -> bool:
        """Whether the channel uses TLS."""
        return bool(
            self.tls or self.root_certificates or self.certificate_chain or self.server_name
        )

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """Returns the TLS channel credentials, or None for a plaintext channel."""
        if not self.secure:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )

    def channel_options(self) -> list[tuple[str, str | int]]:
        """The options of the console's channel (message sizes, the verified name)."""
        options: list[tuple[str, str | int]] = [
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
        ]
        if self.server_name and self.secure:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        return options

    def open_channel(self) -> grpc.aio.Channel:
        """Opens the console's one asyncio channel (call from the serving event loop)."""
        options = self.channel_options()
        credentials = self.channel_credentials()
        if credentials is None:
            return grpc.aio.insecure_channel(self.target, options=options)
        return grpc.aio.secure_channel(self.target, credentials, options=options)
