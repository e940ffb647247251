"""Where the EMR client gets its access key from.

The client asks its provider on every call (not once at start-up), so STS
credentials that the default chain rotates are picked up without a restart.
"""

from __future__ import annotations

import re
from typing import Any, Protocol, runtime_checkable

from bot.emr.errors import EmrError
from bot.emr.signing import Credential
from bot.logs import register_secret

CREDENTIALS_ERROR = "CredentialsError"
HOW_TO_CONFIGURE = (
    "configure Alibaba Cloud credentials: set ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET "
    "(plus ALIBABA_CLOUD_SECURITY_TOKEN for STS), or ALIBABA_CLOUD_ROLE_ARN with ALIBABA_CLOUD_OIDC_PROVIDER_ARN "
    "and ALIBABA_CLOUD_OIDC_TOKEN_FILE (RRSA), or a profile in ~/.alibabacloud/credentials.ini / ~/.aliyun/config.json "
    "(ALIBABA_CLOUD_PROFILE selects one), or ALIBABA_CLOUD_CREDENTIALS_URI, or an ECS RAM role"
)


@runtime_checkable
class CredentialsProvider(Protocol):
    """Anything that hands out the credential to sign the next request with."""

    async def get_credential(self) -> Credential: ...


class StaticCredentials:
    """A fixed access key (tests, scripts); with `security_token` it is an STS credential."""

    def __init__(self, access_key_id: str, access_key_secret: str, security_token: str | None = None) -> None:
        self._credential = Credential(access_key_id, access_key_secret, security_token)

    async def get_credential(self) -> Credential:
        return self._credential

    def __repr__(self) -> str:
        return f"StaticCredentials({self._credential.access_key_id!r}, ...)"


def _describe_failure(exc: BaseException) -> str:
    # The chain's messages name providers and missing variables; cut them short and
    # keep them on one line. They never carry a secret the chain failed to load.
    text = re.sub(r"\s+", " ", str(exc)).strip()
    if len(text) > 400:
        text = text[:400] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class DefaultCredentials:
    """The default credentials chain of `alibabacloud-credentials`, asked through its async API.

    `client` is an `alibabacloud_credentials.client.Client` (or anything with an async
    `get_credential_async()` returning its CredentialModel); by default one built on the
    default chain, created on first use so that importing raybot reads no environment.
    """

    def __init__(self, client: Any | None = None) -> None:
        self._client = client

    def _chain(self) -> Any:
        if self._client is None:
            from alibabacloud_credentials.client import Client

            self._client = Client()
        return self._client

    async def get_credential(self) -> Credential:
        """The chain's current credential; any failure is EmrError(code="CredentialsError")."""
        try:
            model = await self._chain().get_credential_async()
        except Exception as exc:
            raise EmrError(
                action="GetCredential",
                code=CREDENTIALS_ERROR,
                message=f"no usable Alibaba Cloud credentials ({_describe_failure(exc)}); {HOW_TO_CONFIGURE}",
            ) from None
        key_id = getattr(model, "access_key_id", None)
        secret = getattr(model, "access_key_secret", None)
        if not key_id or not secret:
            kind = getattr(model, "type", None) or "unknown"
            raise EmrError(
                action="GetCredential",
                code=CREDENTIALS_ERROR,
                message=f"the credentials chain returned a {kind} credential without an access key; {HOW_TO_CONFIGURE}",
            )
        token = getattr(model, "security_token", None) or None
        register_secret(secret)  # whatever logs, it never shows these
        register_secret(token)
        return Credential(key_id, secret, token)
