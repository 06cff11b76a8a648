"""Deploy-time secrets: `.secrets/` or `.secrets.yaml` → the workflow's Kubernetes Secret.

The Secret is mounted at /app/secrets, where the engine reads it like a
`.secrets/` directory: one file per entry, JSON parsed, anything else taken as
a plain value. So YAML maps become JSON strings here and plain files stay text.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import re
from typing import Any, Mapping

import yaml

from builder.errors import BuildError
from engine.yaml_values import YAMLValueError, load_plain_yaml

SECRETS_DIR = ".secrets"
SECRETS_YAML = ".secrets.yaml"
REDACTED = "<redacted>"
# etcd's limit on one object, which the API server enforces for Secrets.
MAX_SECRET_BYTES = 1024 * 1024
_KEY_RE = re.compile(r"^[-._a-zA-Z0-9]+$")


@dataclasses.dataclass(frozen=True)
class SecretData:
    """The entries for `{name}-secrets`, and where they came from."""

    source: pathlib.Path
    data: Mapping[str, str]
    # `.secrets.yaml` when `.secrets/` was used instead of it (the CLI warns).
    ignored: pathlib.Path | None = None


def secret_name(workflow: str) -> str:
    return f"{workflow}-secrets"


def load_secret_data(directory: str | pathlib.Path) -> SecretData | None:
    """Entries from `DIR/.secrets/` if it holds any, else from `DIR/.secrets.yaml`; None if neither."""
    directory = pathlib.Path(directory)
    secrets_dir = directory / SECRETS_DIR
    secrets_yaml = directory / SECRETS_YAML
    if secrets_dir.is_dir():
        data = read_secrets_dir(secrets_dir)
        if data:
            ignored = secrets_yaml if secrets_yaml.is_file() else None
            return SecretData(secrets_dir, data, ignored)
    if secrets_yaml.is_file():
        data = read_secrets_yaml(secrets_yaml)
        if data:
            return SecretData(secrets_yaml, data)
    return None


def read_secrets_dir(path: pathlib.Path) -> dict[str, str]:
    """One entry per regular file, named after it; hidden files skipped, whitespace trimmed."""
    data: dict[str, str] = {}
    for entry in sorted(path.iterdir()):
        if entry.name.startswith("."):
            # Editor droppings and the `..data` links of a mounted Secret volume.
            continue
        if not entry.is_file():
            # As the engine reads the directory: only regular files are secrets.
            continue
        _check_key(entry.name, str(entry))
        try:
            text = entry.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise BuildError(f"{entry}: not UTF-8 text; secrets are text (JSON or a plain value)") from None
        except OSError as exc:
            raise BuildError(f"{entry}: cannot read: {exc.strerror or exc}") from None
        data[entry.name] = text.strip()
    _check_size(data, path)
    return data


def read_secrets_yaml(path: pathlib.Path) -> dict[str, str]:
    """One entry per top-level key; maps and lists become JSON, scalars their text."""
    try:
        # The spec parser's reader: aliases count against its limit, so a "billion laughs" is refused, not expanded.
        document = load_plain_yaml(path.read_text(encoding="utf-8"))
    except YAMLValueError as exc:
        raise BuildError(f"{path}: invalid YAML: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise BuildError(f"{where}: invalid YAML: {problem}") from None
    except UnicodeDecodeError:
        raise BuildError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise BuildError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise BuildError(f"{path}: expected a mapping of secret names to values, got {type(document).__name__}")
    data: dict[str, str] = {}
    for key, value in document.items():
        _check_key(key, f"{path}: key {key!r}")
        if value is None:
            raise BuildError(f"{path}: key {key!r} has no value")
        data[key] = _encode_value(value)
    _check_size(data, path)
    return dict(sorted(data.items()))


def _encode_value(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    # Numbers, booleans, maps and lists: JSON, which is what the engine parses back.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _check_key(key: str, where: str) -> None:
    if not _KEY_RE.match(key) or key in (".", ".."):
        raise BuildError(
            f"{where}: {key!r} is not a valid Secret key (letters, digits, '-', '_' and '.' only)"
        )


def _check_size(data: Mapping[str, str], where: pathlib.Path) -> None:
    size = sum(len(k) + len(v.encode()) for k, v in data.items())
    if size > MAX_SECRET_BYTES:
        raise BuildError(f"{where}: secrets add up to {size} bytes; a Kubernetes Secret holds at most 1 MiB")


def secret_checksum(data: Mapping[str, str], *, namespace: str = "", name: str = "") -> str:
    """A digest of every entry at once, for the pod template's annotation: it changes when
    any entry does, so a changed Secret rolls the pods.

    Anyone who may read Deployments sees it, and a plain sha256 of a short
    secret can be guessed offline, so it is scrypt (memory-hard, ~50 ms), salted
    with the namespace and workflow so one table cannot serve every cluster.
    """
    canonical = json.dumps(dict(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    salt = f"pipedreamer secret checksum/{namespace}/{name}".encode()
    return hashlib.scrypt(canonical.encode("utf-8"), salt=salt, n=2**14, r=8, p=1, dklen=32).hex()


def render_secret(name: str, namespace: str, labels: Mapping[str, str], data: Mapping[str, str]) -> dict:
    """The Opaque Secret `{name}-secrets`, values as stringData."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": secret_name(name), "namespace": namespace, "labels": dict(labels)},
        "type": "Opaque",
        "stringData": {key: data[key] for key in sorted(data)},
    }


def redact_secret(obj: Mapping) -> dict:
    """A copy of a Secret with every value replaced by `<redacted>`."""
    redacted = json.loads(json.dumps(obj))
    for field in ("stringData", "data"):
        if field in redacted:
            redacted[field] = {key: REDACTED for key in redacted[field]}
    return redacted
