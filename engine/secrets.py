"""Secrets: the seed's cascade (explicit path, or `.secrets/` < `.secrets.yaml` < `/app/secrets`) and redaction.

A secrets directory holds one file per service: a JSON object is used as is,
anything else becomes `{"value": <stripped text>}`. Hidden files are ignored.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from engine.errors import PipedreamerError
from engine.yaml_values import YAMLValueError, load_plain_yaml

SECRETS_DIR = ".secrets"
SECRETS_YAML = ".secrets.yaml"
MOUNT_DIR = Path("/app/secrets")
REDACTED = "***"

Secrets = dict[str, Any]


class SecretsError(PipedreamerError):
    """A secrets source that exists but cannot be read; the message names the file."""

    def __init__(self, file: Path | str, message: str):
        self.file = str(file)
        super().__init__(f"{file}: {message}", file=self.file)


def load_secrets(
    workflow_dir: Path | str,
    explicit: Path | str | None = None,
    *,
    mount_dir: Path | str | None = MOUNT_DIR,
) -> Secrets:
    """Resolves the cascade for `workflow_dir`.

    `explicit` (a file or a directory) wins alone and must exist. Otherwise
    `.secrets/` is the base, `.secrets.yaml` merges on top, then `mount_dir`
    (the Kubernetes Secret volume). Merging is per service: a later source
    replaces a whole service entry.
    """
    if explicit is not None:
        path = Path(explicit)
        if not path.exists():
            raise SecretsError(path, "not found (given with --secrets)")
        return read_secrets_path(path)
    directory = Path(workflow_dir)
    merged: Secrets = {}
    for source in (directory / SECRETS_DIR, directory / SECRETS_YAML, Path(mount_dir) if mount_dir else None):
        if source is not None and source.exists():
            merged.update(read_secrets_path(source))
    return merged


def read_secrets_path(path: Path) -> Secrets:
    """A secrets directory or YAML file."""
    return read_secrets_dir(path) if path.is_dir() else read_secrets_yaml(path)


def read_secrets_yaml(path: Path) -> Secrets:
    """`service: {key: value}` mappings from a YAML file (empty file → {})."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretsError(path, f"cannot read: {exc}") from None
    try:
        # The spec parser's reader: aliases count against its limit, so a "billion laughs" is refused, not expanded.
        data = load_plain_yaml(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}: " if mark else ""
        raise SecretsError(path, f"invalid YAML: {where}{exc.problem or exc.context}") from None
    except (yaml.YAMLError, YAMLValueError) as exc:
        raise SecretsError(path, f"invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SecretsError(path, f"expected a mapping of service → secrets, got {type(data).__name__}")
    return {str(key): value for key, value in data.items()}


def read_secrets_dir(path: Path) -> Secrets:
    """One entry per non-hidden regular file: JSON object, else {"value": text}."""
    secrets: Secrets = {}
    try:
        entries = sorted(path.iterdir())
    except OSError as exc:
        raise SecretsError(path, f"cannot list: {exc}") from None
    for entry in entries:
        # Kubernetes volume mounts hold `..data` symlinks and `..2024_…` dirs: hidden, skipped.
        if entry.name.startswith(".") or not entry.is_file():
            continue
        try:
            text = entry.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretsError(entry, f"cannot read: {exc}") from None
        secrets[entry.name] = _parse_secret_file(text)
    return secrets


def secrets_from_files(files: Mapping[str, str]) -> Secrets:
    """What the engine reads from a secrets directory holding these files (name → text): a mounted Secret's."""
    return {name: _parse_secret_file(text) for name, text in files.items()}


def _parse_secret_file(text: str) -> Any:
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        return parsed
    return {"value": text.strip()}


def secret_values(secrets: Mapping[str, Any]) -> list[str]:
    """Every leaf value (as text) that must never be shown, longest first."""
    found: set[str] = set()
    _collect(secrets, found)
    return sorted(found, key=lambda s: (-len(s), s))


def _collect(value: Any, found: set[str]) -> None:
    if isinstance(value, Mapping):
        for item in value.values():
            _collect(item, found)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _collect(item, found)
    elif isinstance(value, bool) or value is None:
        return
    else:
        text = str(value).strip()
        if text:
            found.add(text)


# A line of a multi-line secret (a PEM key's) is redacted on its own from this
# length on; shorter lines (`}`, `-----`, a PEM's last few characters) would
# mask ordinary text everywhere.
MIN_SECRET_LINE = 8


def secret_forms(value: str) -> set[str]:
    """The texts that show `value`: itself, each long enough line of it, and those as JSON and repr() escape them."""
    pieces = {value}
    lines = [line.strip() for line in value.splitlines()]
    if len(lines) > 1:
        pieces.update(line for line in lines if len(line) >= MIN_SECRET_LINE)
    forms = set(pieces)
    for piece in pieces:
        # An error message quoting the value (a repr, a JSON body) shows it escaped.
        forms.update((json.dumps(piece)[1:-1], json.dumps(piece, ensure_ascii=False)[1:-1], repr(piece)[1:-1]))
    return {form for form in forms if form}


class Redactor:
    """Replaces every secret value with `***` in text and in JSON-like values.

    A value is also found line by line (multi-line secrets) and escaped as
    JSON or repr() would show it; `value()` redacts a value's strings before
    anything serialises them.
    """

    def __init__(self, values: Iterable[str] = ()):
        wanted = {v for v in values if v}
        forms: set[str] = set()
        for value in wanted:
            forms |= secret_forms(value)
        # Longest first, so a secret containing another is replaced whole.
        ordered = sorted(forms, key=lambda s: (-len(s), s))
        self._pattern = re.compile("|".join(re.escape(v) for v in ordered)) if ordered else None
        self._values = frozenset(forms)  # a number equal to a secret (`pin: 1234`) is one too

    @classmethod
    def for_secrets(cls, secrets: Mapping[str, Any]) -> "Redactor":
        return cls(secret_values(secrets))

    def __bool__(self) -> bool:
        return self._pattern is not None

    def text(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(REDACTED, text)

    def value(self, value: Any) -> Any:
        """A copy of a JSON-like value with secrets redacted in every string (keys too)."""
        if self._pattern is None:
            return value
        return self._value(value)

    def _value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._pattern.sub(REDACTED, value)
        if isinstance(value, dict):
            return {self._value(k) if isinstance(k, str) else k: self._value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._value(v) for v in value]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and str(value) in self._values:
            return REDACTED
        return value
