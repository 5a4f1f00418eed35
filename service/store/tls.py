"""The original's TLS keys, ``sslca`` and ``ssl_mode``, as the MySQL driver's url parameters.

The original passes ``sslca`` to its driver: TLS, with the server's certificate verified against
that CA. Here the same keys become PyMySQL's ``ssl_ca`` / ``ssl_check_hostname`` parameters of
the url (SQLAlchemy hands them to the driver):

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


def with_tls(url: str, sslca: str | None, ssl_mode: str | None) -> str:
    """``url`` (a MySQL one; any other is returned as it is) with the driver parameters that
    ``sslca`` and ``ssl_mode`` ask for."""
    if not url.startswith(MYSQL_SCHEMES):
        return url
    if ssl_mode == "disabled":
        return url + ("&" if "?" in url else "?") + "ssl_disabled=true"
    if ssl_mode in VERIFYING and not sslca:
        raise ConfigError(f"ssl_mode {ssl_mode} needs sslca (the CA that signed the server certificate)")
    params = []
    if sslca and ssl_mode != "preferred":
        if not os.access(sslca, os.R_OK):
            raise ConfigError(f"sslca {sslca!r} cannot be read")
        params.append("ssl_ca=" + quote(sslca, safe="/"))
    if ssl_mode in ("verify_ca", "required"):
        params.append("ssl_check_hostname=false")
    return url + ("&" if "?" in url else "?") + "&".join(params) if params else url
