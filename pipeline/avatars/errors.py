"""The one error type for an avatar the pipeline will not take, with stable reason codes.

Fetching and decoding hostile input must never crash a worker: every refusal is an
:class:`AvatarRefused` carrying a code from :data:`REFUSAL_CODES`. Codes are metric label values
and are stored with the account, so they are part of the interface: add, never rename.
"""

from __future__ import annotations

REFUSAL_CODES: frozenset[str] = frozenset(
    {
        # fetch
        "bad_url",
        "scheme_not_allowed",
        "host_not_allowed",
        "private_address",
        "too_large",
        "timeout",
        "http_status",
        "too_many_redirects",
        "file_outside_root",
        "not_found",
        "fetch_failed",
        # decode
        "empty",
        "not_an_image",
        "format_not_allowed",
        "too_many_pixels",
        "truncated",
        "decode_failed",
    }
)
"""Every code an :class:`AvatarRefused` may carry."""


class AvatarRefused(Exception):
    """An avatar refused by the fetch or decode step.

    ``code`` is one of :data:`REFUSAL_CODES` (stable; used as a metric label and stored);
    ``detail`` is free text for logs and analysts (may contain the URL or sizes, never bytes).
    """

    def __init__(self, code: str, detail: str = "") -> None:
        if code not in REFUSAL_CODES:
            raise ValueError(f"unknown avatar refusal code {code!r}")
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail

    def __reduce__(self) -> tuple[type[AvatarRefused], tuple[str, str]]:
        return (AvatarRefused, (self.code, self.detail))


def count_refusal(error: AvatarRefused) -> None:
    """Add one to ``unmask_avatar_errors_total{code}`` (called once per refused avatar)."""
    from pipeline.metrics import AVATAR_ERRORS

    AVATAR_ERRORS.labels(code=error.code).inc()
