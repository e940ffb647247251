"""ACS3-HMAC-SHA256, the V3 request signature of Alibaba Cloud APIs.

Pure functions: no clock, no randomness, no I/O. The caller supplies the date and
nonce, so the emulator can verify with the same code and tests can pin both.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

ALGORITHM = "ACS3-HMAC-SHA256"
CONTENT_SHA256 = "x-acs-content-sha256"
SECURITY_TOKEN = "x-acs-security-token"
ACCESS_KEY_ID = "x-acs-accesskey-id"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True)
class Credential:
    """An access key, optionally with an STS security token."""

    access_key_id: str
    access_key_secret: str = field(repr=False)
    security_token: str | None = field(default=None, repr=False)


def percent_encode(value: str) -> str:
    """RFC 3986 percent-encoding: only unreserved characters stay as they are."""
    return quote(value, safe="~")


def encode_path(*segments: str) -> str:
    """Join raw path segments into a path, each segment percent-encoded."""
    return "/" + "/".join(percent_encode(s) for s in segments)


def canonical_query(query: Mapping[str, str] | None) -> str:
    """Sorted `key=value` pairs, both percent-encoded, joined by `&`."""
    if not query:
        return ""
    pairs = sorted((percent_encode(k), percent_encode(str(v))) for k, v in query.items() if v is not None)
    return "&".join(f"{k}={v}" for k, v in pairs)


def is_signed_header(name: str) -> bool:
    """The headers the signature covers: host, content-type and every x-acs-* header."""
    lowered = name.lower()
    return lowered in ("host", "content-type") or lowered.startswith("x-acs-")


def canonical_headers(headers: Mapping[str, str]) -> tuple[str, str]:
    """Return (canonical header block, `;`-joined signed header names) over the signed headers."""
    selected = sorted((k.lower(), str(v).strip()) for k, v in headers.items() if is_signed_header(k))
    block = "".join(f"{k}:{v}\n" for k, v in selected)
    return block, ";".join(k for k, _ in selected)


def canonical_request(
    method: str,
    path: str,
    query: Mapping[str, str] | None,
    headers: Mapping[str, str],
    body_sha256: str,
    signed_names: list[str] | None = None,
) -> tuple[str, str]:
    """Return (canonical request, signed header names).

    `path` is the path as it goes on the wire (already percent-encoded). With
    `signed_names`, exactly those headers are used (how a verifier reproduces the
    signer's choice); a name with no header is a KeyError.
    """
    if signed_names is None:
        block, names = canonical_headers(headers)
    else:
        lowered = {k.lower(): str(v).strip() for k, v in headers.items()}
        block = "".join(f"{n}:{lowered[n]}\n" for n in signed_names)
        names = ";".join(signed_names)
    text = f"{method.upper()}\n{path or '/'}\n{canonical_query(query)}\n{block}\n{names}\n{body_sha256}"
    return text, names


def string_to_sign(canonical: str) -> str:
    return f"{ALGORITHM}\n{hashlib.sha256(canonical.encode('utf-8')).hexdigest()}"


def signature(secret: str, to_sign: str) -> str:
    return hmac.new(secret.encode("utf-8"), to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def authorization(access_key_id: str, signed_names: str, sig: str) -> str:
    return f"{ALGORITHM} Credential={access_key_id},SignedHeaders={signed_names},Signature={sig}"


def parse_authorization(value: str) -> dict[str, str]:
    """Split an ACS3 Authorization header into Credential, SignedHeaders and Signature.

    Raises ValueError when the header is not of that form.
    """
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM or not rest:
        raise ValueError(f"the Authorization header is not {ALGORITHM}")
    parts: dict[str, str] = {}
    for item in rest.split(","):
        key, sep, val = item.strip().partition("=")
        if not sep:
            raise ValueError(f"malformed Authorization item {item!r}")
        parts[key] = val
    missing = {"Credential", "SignedHeaders", "Signature"} - parts.keys()
    if missing:
        raise ValueError(f"the Authorization header lacks {', '.join(sorted(missing))}")
    return parts


def sign(
    *,
    method: str,
    path: str,
    query: Mapping[str, str] | None,
    headers: Mapping[str, str],
    body: bytes,
    credential: Credential,
) -> dict[str, str]:
    """Return `headers` plus x-acs-content-sha256, the STS headers when a token is set, and Authorization.

    `headers` must already hold host, x-acs-action, x-acs-version, x-acs-date,
    x-acs-signature-nonce and, with a body, content-type. `body` is the exact byte
    string that will be sent.
    """
    out = {k.lower(): v for k, v in headers.items()}
    out[CONTENT_SHA256] = hashlib.sha256(body).hexdigest()
    if credential.security_token:
        out[ACCESS_KEY_ID] = credential.access_key_id
        out[SECURITY_TOKEN] = credential.security_token
    canonical, names = canonical_request(method, path, query, out, out[CONTENT_SHA256])
    sig = signature(credential.access_key_secret, string_to_sign(canonical))
    out["authorization"] = authorization(credential.access_key_id, names, sig)
    return out


# --- the RPC signature (signature version 1.0, HMAC-SHA1), as STS AssumeRole is signed ---------------

RPC_SIGNATURE_METHOD = "HMAC-SHA1"
RPC_SIGNATURE_VERSION = "1.0"


def rpc_percent_encode(value: str) -> str:
    """POP percent-encoding: RFC 3986 unreserved characters stay, a space is %20, `*` is %2A, `~` stays."""
    return quote(value, safe="~")


def rpc_string_to_sign(method: str, params: Mapping[str, str]) -> str:
    """`METHOD&%2F&<encoded canonical query>` over every parameter but Signature, sorted by name."""
    pairs = sorted((k, v) for k, v in params.items() if k != "Signature")
    canonical = "&".join(f"{rpc_percent_encode(k)}={rpc_percent_encode(str(v))}" for k, v in pairs)
    return f"{method.upper()}&{rpc_percent_encode('/')}&{rpc_percent_encode(canonical)}"


def rpc_signature(secret: str, to_sign: str) -> str:
    """Base64 of HMAC-SHA1 keyed with the secret followed by `&`."""
    digest = hmac.new((secret + "&").encode("utf-8"), to_sign.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")
