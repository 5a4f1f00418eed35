"""The original's TLS keys, ``sslca`` and ``ssl_mode``, as the drivers' url parameters.

The original passes ``sslca`` to its driver: TLS, with the server's certificate verified against
that CA. Here the same keys become PyMySQL's ``ssl_ca`` / ``ssl_check_hostname`` parameters of
the url (SQLAlchemy hands them to the driver), or on PostgreSQL libpq's ``sslrootcert`` and
``sslmode`` (``verify-full``, ``verify-ca``, ``require``, ``prefer``, ``disable``):

=================== ==========================================================================
``ssl_mode``        the connection
=================== ==========================================================================
unset               with ``sslca``: as ``verify_identity``; without: as ``preferred``
``verify_identity`` TLS; the certificate verified against ``sslca`` and the host name checked
``verify_ca``       TLS; the certificate verified against ``sslca``, the host name not checked
``required``        TLS; the certificate verified against ``sslca`` when given, else not at all
``preferred``       TLS when the server offers it, unverified, else plain (the driver's default)
``disabled``        no TLS; ``sslca`` is not read
=================== ==========================================================================

A mode that verifies needs ``sslca``; a CA file that cannot be read stops the start.
"""

from __future__ import annotations

import os
from urllib.parse import quote

from ...errors import ConfigError

VERIFYING = ("verify_identity", "verify_ca")
MYSQL_SCHEMES = ("mysql://", "mysql2://", "mysql+pymysql://")
POSTGRES_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")


def with_tls(url: str, sslca: str | None, ssl_mode: str | None) -> str:
    """``url`` with the driver parameters that ``sslca`` and ``ssl_mode`` ask for (a SQLite url
    is returned as it is)."""
    if url.startswith(MYSQL_SCHEMES):
        params = _mysql(sslca, ssl_mode)
    elif url.startswith(POSTGRES_SCHEMES):
        params = _postgres(sslca, ssl_mode)
    else:
        return url
    return url + ("&" if "?" in url else "?") + "&".join(params) if params else url


def _ca(sslca: str | None, ssl_mode: str | None) -> str | None:
    """The CA file to verify with (checked readable), or None."""
    if ssl_mode in VERIFYING and not sslca:
        raise ConfigError(f"ssl_mode {ssl_mode} needs sslca (the CA that signed the server certificate)")
    if not sslca or ssl_mode in ("disabled", "preferred"):
        return None
    if not os.access(sslca, os.R_OK):
        raise ConfigError(f"sslca {sslca!r} cannot be read")
    return quote(sslca, safe="/")


def _mysql(sslca: str | None, ssl_mode: str | None) -> list[str]:
    """PyMySQL's parameters (through SQLAlchemy's url)."""
    if ssl_mode == "disabled":
        return ["ssl_disabled=true"]
    ca = _ca(sslca, ssl_mode)
    params = [f"ssl_ca={ca}"] if ca else []
    return params + (["ssl_check_hostname=false"] if ssl_mode in ("verify_ca", "required") else [])


def _postgres(sslca: str | None, ssl_mode: str | None) -> list[str]:
    """libpq's ``sslmode`` and ``sslrootcert``: the same table, in libpq's words (``preferred`` and
    unset without ``sslca`` are libpq's default, ``prefer``)."""
    ca = _ca(sslca, ssl_mode)
    mode = {"disabled": "disable", "required": "require", "verify_ca": "verify-ca"}.get(ssl_mode or "")
    if ssl_mode == "verify_identity" or (ca and ssl_mode is None):
        mode = "verify-full"
    if ssl_mode == "required" and ca:
        mode = "verify-ca"  # as on MySQL: required verifies the certificate when a CA is given
    params = [f"sslmode={mode}"] if mode else []
    return params + ([f"sslrootcert={ca}"] if ca else [])
