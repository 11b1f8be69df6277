"""The identity of a client certificate (`auth.mode: mtls`).

The subject is the certificate's first URI SAN (a SPIFFE ID, say), else its first
e-mail SAN, else its first DNS SAN, else the subject's common name; the groups are the
subject's organizational units (OU). The handshake has already verified the
certificate against `server.tls.client_ca_file`.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID

from skewless.server.auth.principal import Principal

__all__ = ["certificate_principal"]

_SAN_ORDER: tuple[type[x509.GeneralName], ...] = (
    x509.UniformResourceIdentifier,
    x509.RFC822Name,
    x509.DNSName,
)


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def certificate_principal(pem: bytes) -> Principal | None:
    """The principal of a PEM client certificate; None when it names no identity."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None
    subject: str | None = None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        san = None
    if san is not None:
        for kind in _SAN_ORDER:
            values = san.get_values_for_type(kind)  # type: ignore[arg-type]
            if values:
                subject = str(values[0])
                break
    if subject is None:
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        subject = _text(names[0].value) if names else None
    if not subject:
        return None
    units = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    return Principal(subject=subject, groups=frozenset(_text(u.value) for u in units))
