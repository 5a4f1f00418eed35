"""AWS Signature Version 4, verified: the ``Authorization`` header of a request to the SQS endpoint.

The service recomputes the signature from the request as it arrived (method, path, query, the
signed headers and the SHA-256 of the body) with the secret of the access key id the request
names, and compares in constant time: a body changed after signing, an unknown key or a wrong
secret is refused; so is a request whose ``X-Amz-Date`` is further from the service's clock than
the allowed skew, which is what bounds the replay of a captured request (as at AWS, an identical
request within that window is served again). Presigned URLs are not accepted.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime

from .errors import SqsError

ALGORITHM = "AWS4-HMAC-SHA256"
AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),"
    r"\s*Signature=(?P<signature>[0-9a-f]{64})\s*"
)
SPACES = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """What a signature covers: method, path as sent, query string, headers (lower-case names,
    repeated ones joined by commas) and body."""

    method: str
    raw_path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Signed:
    """What an ``Authorization`` header says, before its signature is checked."""

    access_key_id: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


def incomplete(message: str) -> SqsError:
    return SqsError("IncompleteSignature", message, 400)


def parse_authorization(value: str | None) -> Signed:
    """The parts of an ``Authorization`` header; MissingAuthenticationToken or IncompleteSignature."""
    if not value:
        raise SqsError("MissingAuthenticationToken", "Request is missing Authentication Token", 403)
    match = AUTHORIZATION.fullmatch(value.strip())
    if match is None:
        raise incomplete(
            f"Authorization header requires {ALGORITHM} with Credential, SignedHeaders, Signature."
        )
    parts = match["credential"].split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not all(parts):
        raise incomplete("Credential must have the form <key id>/<date>/<region>/<service>/aws4_request.")
    signed = tuple(match["signed"].split(";"))
    if "host" not in signed:
        raise incomplete("SignedHeaders must include host.")
    return Signed(parts[0], parts[1], parts[2], parts[3], signed, match["signature"])


def request_time(headers: dict[str, str], signed: Signed, now: float, skew: float) -> str:
    """The request's ``X-Amz-Date``, checked against the credential's date and the clock."""
    stamp = headers.get("x-amz-date")
    if stamp is None or "x-amz-date" not in signed.signed_headers:
        raise incomplete("The request must sign an X-Amz-Date header.")
    try:
        when = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise incomplete("X-Amz-Date must be a basic ISO 8601 time, such as 20250101T000000Z.") from None
    if stamp[:8] != signed.date:
        raise SqsError("SignatureDoesNotMatch", "The credential's date is not the date of X-Amz-Date.", 403)
    if abs(now - when) > skew:
        raise SqsError(
            "RequestExpired", f"Request has expired: X-Amz-Date is more than {skew:g} seconds from now.", 400
        )
    return stamp


def canonical_request(request: HttpRequest, signed: Signed) -> str:
    """The canonical request of SigV4 (the path encoded once more, as for every service but S3)."""
    path = urllib.parse.quote(request.raw_path or "/", safe="/~")
    pairs = urllib.parse.parse_qsl(request.query, keep_blank_values=True)
    quoted = sorted(
        (urllib.parse.quote(k, safe="-_.~"), urllib.parse.quote(v, safe="-_.~")) for k, v in pairs
    )
    canonical_query = "&".join(f"{k}={v}" for k, v in quoted)
    lines = "".join(
        f"{name}:{SPACES.sub(' ', request.headers.get(name, '').strip())}\n" for name in signed.signed_headers
    )
    payload = hashlib.sha256(request.body).hexdigest()
    return "\n".join([request.method, path, canonical_query, lines, ";".join(signed.signed_headers), payload])


def signature(secret: str, signed: Signed, stamp: str, canonical: str) -> str:
    """The signature of a canonical request under ``secret``."""
    key = ("AWS4" + secret).encode("utf-8")
    for part in (signed.date, signed.region, signed.service, "aws4_request"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    to_sign = "\n".join([ALGORITHM, stamp, signed.scope, digest])
    return hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def verify(secret: str, signed: Signed, request: HttpRequest, now: float, skew: float) -> None:
    """Refuse the request (SignatureDoesNotMatch, RequestExpired, ...) unless ``signed`` signs it
    under ``secret``."""
    if signed.service != "sqs":
        raise SqsError("SignatureDoesNotMatch", "The credential must be scoped to the service sqs.", 403)
    stamp = request_time(request.headers, signed, now, skew)
    expected = signature(secret, signed, stamp, canonical_request(request, signed))
    if not hmac.compare_digest(expected, signed.signature):
        raise SqsError(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method.",
            403,
        )
