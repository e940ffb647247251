"""The one error type of the EMR client, raised for every failed call."""

from __future__ import annotations

import re

THROTTLING_CODES = frozenset({"Throttling", "Throttling.User", "Throttling.Api", "Throttling.Concurrent"})

_STRING_TO_SIGN = re.compile(r"[\s:,.;]*\b(?:server\s+)?string\s*to\s*sign\b.*", re.IGNORECASE | re.DOTALL)


def cloud_message(text: str) -> str:
    """A cloud error's Message as raybot may show and log it: a signature mismatch's "server string to sign is: …"
    is cut off, because that string quotes the signed headers, a security token among them (URL-encoded, so the
    log redaction of held secrets would not recognise it)."""
    cut = _STRING_TO_SIGN.sub("", text)
    return cut if cut == text else f"{cut} (the string the cloud signed is left out: it can carry credentials)"


class EmrError(Exception):
    """A failed EMR Serverless Spark call.

    `code`, `message` and `request_id` come from the service's error body (or the
    `x-acs-request-id` header); transport failures use raybot's own codes
    (`ConnectionError`, `Timeout`, `InvalidResponse`, `CredentialsError`).
    `status` is the HTTP status, None when no response arrived.
    """

    def __init__(
        self,
        *,
        action: str,
        code: str,
        message: str,
        request_id: str | None = None,
        status: int | None = None,
        retryable: bool = False,
        recommend: str | None = None,
        sent: bool = True,
        cluster_id: str | None = None,
        attempts: int = 1,
        alias: str | None = None,
    ) -> None:
        self.action = action
        self.code = code
        self.message = message
        self.request_id = request_id
        self.status = status
        self.retryable = retryable
        self.recommend = recommend
        # False when the request never left raybot (no connection could be made): it cannot have been applied.
        self.sent = sent
        # Which cluster the call was about (None for a list) and how many attempts the client made, retries
        # included: the message a person reads says both.
        self.cluster_id = cluster_id
        self.attempts = attempts
        # The config's name of that cluster, for people ("prod"): the client knows only ids, so whoever reports
        # the error and knows the config fills it in (bot.dispatch).
        self.alias = alias
        super().__init__(str(self))

    @property
    def maybe_applied(self) -> bool:
        """Whether a change call that failed this way may still have been applied by the service.

        A timeout, a broken connection, an unreadable answer or a 5xx can all follow a request the
        service received and acted on; throttling, a 4xx and a credentials failure mean it was not.
        """
        if not self.sent or self.code == "CredentialsError" or self.code.startswith("Throttling"):
            return False
        if self.status is None:
            return True
        # A 2xx whose body could not be read was accepted: only its answer is lost.
        return self.status >= 500 or 200 <= self.status < 300

    def __str__(self) -> str:
        rid = f", RequestId {self.request_id}" if self.request_id else ""
        status = f"HTTP {self.status} " if self.status is not None else ""
        return f"{self.action} failed: {status}{self.code}: {self.message}{rid}"


def is_retryable(status: int | None, code: str) -> bool:
    """Throttling (whatever the status: it often arrives as 400), 5xx and transport failures."""
    if code in THROTTLING_CODES or code.startswith("Throttling"):
        return True
    if status is None:
        return code in ("ConnectionError", "Timeout")
    return status >= 500
