"""HMAC-SHA256 signatures for webhooks and their completion callbacks.

The signed message is ``<timestamp>.<raw body>``; the timestamp (Unix seconds) travels in
``X-Crewline-Timestamp`` and the signature as ``X-Crewline-Signature: sha256=<hex>``. Several
comma-separated signatures are accepted, so a sender can sign with an old and a new secret while rotating.
"""

from __future__ import annotations

import hashlib
import hmac
import time

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "SignatureError", "signed_headers", "verify"]

TIMESTAMP_HEADER = "X-Crewline-Timestamp"
SIGNATURE_HEADER = "X-Crewline-Signature"


class SignatureError(Exception):
    """The request is not signed as it should be; the message says how."""


def _sign(secret: bytes, timestamp: int | str, body: bytes) -> str:
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def signed_headers(secret: bytes, body: bytes, *, now: float | None = None) -> dict[str, str]:
    timestamp = int(time.time() if now is None else now)
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: _sign(secret, timestamp, body)}


def verify(
    secret: bytes,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    *,
    tolerance: float,
    now: float | None = None,
) -> str:
    """Check a signed body; returns the signature that matched, raises :class:`SignatureError`."""
    if not timestamp or not signature:
        missing = TIMESTAMP_HEADER if not timestamp else SIGNATURE_HEADER
        raise SignatureError(f"missing {missing} header: sign `<timestamp>.<body>` with HMAC-SHA256")
    try:
        sent = int(timestamp.strip())
    except ValueError:
        raise SignatureError(f"{TIMESTAMP_HEADER} must be Unix seconds, an integer") from None
    skew = (time.time() if now is None else now) - sent
    if abs(skew) > tolerance:
        raise SignatureError(
            f"{TIMESTAMP_HEADER} is {abs(skew):.0f}s {'old' if skew > 0 else 'in the future'}, "
            f"outside the {tolerance:.0f}s tolerance (check the sender's clock)"
        )
    expected = _sign(secret, timestamp.strip(), body)
    for candidate in signature.split(","):
        candidate = candidate.strip()
        if hmac.compare_digest(candidate.encode(), expected.encode()):
            return candidate
    if not any(c.strip().startswith("sha256=") for c in signature.split(",")):
        raise SignatureError(f"{SIGNATURE_HEADER} must look like sha256=<hex digest>")
    raise SignatureError("signature does not match the body: check the hook's secret and sign the raw body")
