"""Personal data at rest: keyed hashes (HMAC with the settings' secret) instead of raw values.

Signup addresses, device ids and email domains are needed raw only while an event is in
flight; what is stored is ``hmac:<hex>``, so the database alone does not reveal them while
equal values still compare equal.
"""

from __future__ import annotations

from typing import Any

from pipeline.signals.features import keyed_hash

PERSONAL_FIELDS = ("signup_ip", "device_id", "email_domain")


def redact_event(payload: dict[str, Any], secret: bytes) -> dict[str, Any]:
    """A copy of an event document with its personal fields replaced by keyed hashes."""
    out = dict(payload)
    for name in PERSONAL_FIELDS:
        value = out.get(name)
        if isinstance(value, str):
            out[name] = "hmac:" + keyed_hash(secret, name, value)
    return out
