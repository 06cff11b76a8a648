"""Webhook signatures: GitHub's `X-Hub-Signature-256` and Standard Webhooks, checked over the raw body.

Pure functions: the key (from `secrets.webhooks.<name>`), the body as it came
off the wire and the request's headers in; the delivery id out, or
`SignatureRefused` saying why. Signatures are compared in constant time, and no
message ever holds the key or the signature we expected.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import re
from typing import Any, Mapping

from engine.errors import Problem
from proto.pipedreamer.v1 import workflow_pb2

GITHUB = workflow_pb2.Trigger.SIGNATURE_GITHUB
STANDARD = workflow_pb2.Trigger.SIGNATURE_STANDARD
NONE = workflow_pb2.Trigger.SIGNATURE_NONE
SCHEMES = {GITHUB: "github", STANDARD: "standard", NONE: "none"}

GITHUB_SIGNATURE = "X-Hub-Signature-256"
GITHUB_DELIVERY = "X-GitHub-Delivery"
GITHUB_EVENT = "X-GitHub-Event"
STANDARD_ID = "webhook-id"
STANDARD_TIMESTAMP = "webhook-timestamp"
STANDARD_SIGNATURE = "webhook-signature"
# Standard Webhooks: a timestamp further than this from our clock is refused (replays, stale deliveries).
TOLERANCE_SECONDS = 300
STANDARD_KEY_PREFIX = "whsec_"
SECRETS_ENTRY = "webhooks"

_GITHUB_RE = re.compile(r"^sha256=([0-9a-fA-F]{64})$")


class SignatureRefused(Exception):
    """Why a delivery is not believed: safe to show the sender (never the key or the expected signature)."""


def scheme_name(trigger: workflow_pb2.Trigger) -> str:
    return SCHEMES.get(trigger.signature, "github")


def webhook_triggers(spec: workflow_pb2.WorkflowSpec) -> list[workflow_pb2.Trigger]:
    return [t for t in spec.triggers if t.type == workflow_pb2.Trigger.TYPE_WEBHOOK]


def webhook_key(secrets: Mapping[str, Any], name: str) -> str | None:
    """`secrets.webhooks.<name>` as text, or None when it is not set."""
    entry = secrets.get(SECRETS_ENTRY) if isinstance(secrets, Mapping) else None
    value = entry.get(name) if isinstance(entry, Mapping) else None
    if value is None or isinstance(value, (bool, Mapping, list)):
        return None
    text = str(value)
    return text if text else None


def key_bytes(key: str, signature: int) -> bytes:
    """The HMAC key: a Standard Webhooks `whsec_<base64>` key is the base64's bytes, any other key its UTF-8.

    Raises ValueError for a `whsec_` key that is not base64.
    """
    if signature == STANDARD and key.startswith(STANDARD_KEY_PREFIX):
        try:
            return base64.b64decode(key[len(STANDARD_KEY_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("a whsec_ key must be followed by base64 (as Standard Webhooks senders show it)") from None
    return key.encode()


def key_problems(spec: workflow_pb2.WorkflowSpec, secrets: Mapping[str, Any], file: str = "workflow.yaml") -> list[Problem]:
    """A signed webhook without a usable key is an error: it would refuse every delivery (or, worse, none)."""
    problems = []
    for index, trigger in enumerate(spec.triggers):
        if trigger.type != workflow_pb2.Trigger.TYPE_WEBHOOK or trigger.signature == NONE:
            continue
        field = f"triggers[{index}]"
        key = webhook_key(secrets, trigger.name)
        if key is None:
            problems.append(Problem(
                file, None, field,
                f"webhook {trigger.name!r} ({trigger.path}, signature {scheme_name(trigger)}) has no key: set "
                f"secrets.webhooks.{trigger.name} (in .secrets.yaml, the `webhooks` file of .secrets/ or of the "
                "Secret volume, or --secrets), or write signature: none to accept unsigned calls",
            ))  # fmt: skip
            continue
        try:
            key_bytes(key, trigger.signature)
        except ValueError as exc:
            problems.append(Problem(file, None, field, f"secrets.webhooks.{trigger.name}: {exc}"))
    return problems


@dataclasses.dataclass(frozen=True)
class Verified:
    """A delivery that passed: its id (the sender's, for dropping repeats; "" when it sent none)."""

    delivery_id: str


def verify(
    signature: int, key: bytes | None, body: bytes, headers: Mapping[str, str], now: float
) -> Verified:
    """Checks a delivery by the trigger's scheme; `headers` must look names up case-insensitively."""
    if signature == NONE:
        return Verified(headers.get(GITHUB_DELIVERY) or headers.get(STANDARD_ID) or "")
    if key is None:
        raise SignatureRefused("no key is configured for this webhook")
    if signature == STANDARD:
        return verify_standard(key, body, headers, now)
    return verify_github(key, body, headers)


def verify_github(key: bytes, body: bytes, headers: Mapping[str, str]) -> Verified:
    """`X-Hub-Signature-256: sha256=<hex HMAC-SHA256(key, body)>`; delivery id `X-GitHub-Delivery`."""
    given = headers.get(GITHUB_SIGNATURE)
    if given is None:
        raise SignatureRefused(f"missing {GITHUB_SIGNATURE} header: this webhook accepts GitHub-signed deliveries only")
    match = _GITHUB_RE.match(given.strip())
    if match is None:
        raise SignatureRefused(f"{GITHUB_SIGNATURE} must be sha256= and 64 hex digits")
    expected = hmac.new(key, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, match.group(1).lower()):
        raise SignatureRefused(
            f"{GITHUB_SIGNATURE} does not match the body: the sender's secret is not this webhook's key, "
            "or the body changed on the way"
        )
    return Verified(headers.get(GITHUB_DELIVERY, ""))


def verify_standard(key: bytes, body: bytes, headers: Mapping[str, str], now: float) -> Verified:
    """Standard Webhooks: `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>` (any of
    several, space-separated), `webhook-timestamp` within TOLERANCE_SECONDS of `now`; delivery id `webhook-id`."""
    missing = [name for name in (STANDARD_ID, STANDARD_TIMESTAMP, STANDARD_SIGNATURE) if not headers.get(name)]
    if missing:
        raise SignatureRefused(f"missing {', '.join(missing)} header{'s' if len(missing) > 1 else ''} (Standard Webhooks)")
    delivery, stamp, given = headers[STANDARD_ID], headers[STANDARD_TIMESTAMP].strip(), headers[STANDARD_SIGNATURE]
    if not stamp.isascii() or not stamp.isdigit():
        raise SignatureRefused(f"{STANDARD_TIMESTAMP} must be whole seconds since 1970, got {stamp[:32]!r}")
    skew = int(stamp) - now
    if abs(skew) > TOLERANCE_SECONDS:
        when = "in the future" if skew > 0 else "old"
        raise SignatureRefused(
            f"{STANDARD_TIMESTAMP} is {abs(skew):.0f} s {when}: more than {TOLERANCE_SECONDS} s from this "
            "engine's clock (a replayed or delayed delivery, or a clock that is off)"
        )
    # Header text back to the bytes that were sent (aiohttp decodes them as UTF-8 with surrogateescape).
    signed = delivery.encode("utf-8", "surrogateescape") + b"." + stamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    found_v1 = False
    for entry in given.split():
        version, _, value = entry.partition(",")
        if version != "v1":
            continue  # v1a (asymmetric) and future versions: not ours to check
        found_v1 = True
        if hmac.compare_digest(expected, value.encode("utf-8", "surrogateescape")):
            return Verified(delivery)
    if not found_v1:
        raise SignatureRefused(f"{STANDARD_SIGNATURE} has no v1 signature")
    raise SignatureRefused(
        f"{STANDARD_SIGNATURE} does not match: the sender's secret is not this webhook's key, "
        "or the body, id or timestamp changed on the way"
    )
