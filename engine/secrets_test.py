"""Secrets: the seed's cascade and file formats, clear errors, redaction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.secrets import REDACTED, Redactor, SecretsError, load_secrets, read_secrets_dir, secret_values


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def workflow(tmp_path: Path) -> Path:
    directory = tmp_path / "wf"
    directory.mkdir()
    return directory


def test_directory_format_json_objects_plain_text_and_hidden_files(tmp_path):
    folder = tmp_path / "s"
    write(folder / "github", json.dumps({"token": "ghp_abc123"}))
    write(folder / "api-token", "  my-plain-token\n")
    write(folder / "list", "[1, 2]")  # JSON but not an object: plain text
    write(folder / ".hidden", "x")
    (folder / "subdir").mkdir()
    assert read_secrets_dir(folder) == {
        "github": {"token": "ghp_abc123"},
        "api-token": {"value": "my-plain-token"},
        "list": {"value": "[1, 2]"},
    }


def test_cascade_dir_then_yaml_then_mount(workflow, tmp_path):
    write(workflow / ".secrets" / "github", '{"token": "from-dir"}')
    write(workflow / ".secrets" / "only-dir", "d")
    write(workflow / ".secrets.yaml", "github:\n  token: from-yaml\nstripe:\n  api_key: sk_yaml\n")
    mount = tmp_path / "mount"
    write(mount / "stripe", '{"api_key": "sk_mount"}')
    assert load_secrets(workflow, mount_dir=mount) == {
        "github": {"token": "from-yaml"},
        "only-dir": {"value": "d"},
        "stripe": {"api_key": "sk_mount"},
    }


def test_explicit_path_wins_alone(workflow, tmp_path):
    write(workflow / ".secrets.yaml", "github:\n  token: from-yaml\n")
    mount = tmp_path / "mount"
    write(mount / "stripe", '{"api_key": "sk_mount"}')
    explicit = write(tmp_path / "explicit.yaml", "slack:\n  webhook_path: /hook\n")
    assert load_secrets(workflow, explicit, mount_dir=mount) == {"slack": {"webhook_path": "/hook"}}
    folder = tmp_path / "explicit-dir"
    write(folder / "nats", '{"token": "n"}')
    assert load_secrets(workflow, folder, mount_dir=mount) == {"nats": {"token": "n"}}


def test_explicit_path_must_exist(workflow, tmp_path):
    with pytest.raises(SecretsError, match="missing.yaml: not found"):
        load_secrets(workflow, tmp_path / "missing.yaml")


def test_no_sources_gives_empty(workflow, tmp_path):
    assert load_secrets(workflow, mount_dir=tmp_path / "nope") == {}
    write(workflow / ".secrets.yaml", "")
    assert load_secrets(workflow, mount_dir=None) == {}


@pytest.mark.parametrize(
    "text, message",
    [
        ("github: [unclosed\n", r"\.secrets\.yaml: invalid YAML: line 2"),
        ("- a\n- b\n", r"\.secrets\.yaml: expected a mapping of service → secrets, got list"),
    ],
)
def test_invalid_yaml_names_the_file(workflow, text, message):
    write(workflow / ".secrets.yaml", text)
    with pytest.raises(SecretsError, match=message):
        load_secrets(workflow, mount_dir=None)


def test_unreadable_secret_file_names_the_file(workflow):
    write(workflow / ".secrets" / "bin", "")
    (workflow / ".secrets" / "bin").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SecretsError, match=r"\.secrets/bin: cannot read"):
        load_secrets(workflow, mount_dir=None)


def test_secret_values_are_every_leaf_longest_first():
    secrets = {"github": {"token": "ghp_abc"}, "db": {"port": 5432, "ssl": True, "hosts": ["h1", "h2"], "empty": " "}}
    assert secret_values(secrets) == ["ghp_abc", "5432", "h1", "h2"]


def test_redactor_replaces_every_occurrence_in_text_and_values():
    redactor = Redactor.for_secrets({"a": {"token": "sekret"}, "b": {"token": "sekret-long"}})
    assert redactor.text("x sekret-long y sekret z") == f"x {REDACTED} y {REDACTED} z"
    value = {"sekret": ["token=sekret", 1, None], "ok": "fine"}
    assert redactor.value(value) == {REDACTED: [f"token={REDACTED}", 1, None], "ok": "fine"}
    assert value["ok"] == "fine" and "sekret" in value  # the original is untouched


def test_a_number_equal_to_a_secret_is_redacted_in_values():
    redactor = Redactor.for_secrets({"door": {"pin": 4821}, "rate": 0.25})
    assert redactor.value({"pin": 4821, "other": 4822, "rate": 0.25, "flag": True, "n": [4821]}) == {
        "pin": REDACTED, "other": 4822, "rate": REDACTED, "flag": True, "n": [REDACTED],
    }  # fmt: skip
    assert redactor.text("pin 4821") == f"pin {REDACTED}"


def test_empty_redactor_is_a_no_op():
    redactor = Redactor.for_secrets({})
    assert not redactor
    assert redactor.text("anything") == "anything"
    value = {"a": 1}
    assert redactor.value(value) is value


def test_regex_characters_in_secrets_are_literal():
    redactor = Redactor(["a.b*c"])
    assert redactor.text("aXbbc a.b*c") == f"aXbbc {REDACTED}"


PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKB\nAw==\n-----END PRIVATE KEY-----\n"


def test_a_multi_line_secret_is_redacted_line_by_line():
    redactor = Redactor.for_secrets({"tls": {"key": PEM}})
    quoted = f"ValueError: bad key line 'MIIEvQIBADANBgkqhkiG9w0BAQEFAASC' in {PEM.splitlines()[2]!r}"
    assert redactor.text(quoted) == f"ValueError: bad key line '{REDACTED}' in '{REDACTED}'"
    assert "MIIEvQ" not in redactor.text(json.dumps({"key": PEM}))
    # Short lines stay, or `Aw==` and `}` would be masked in every text.
    assert redactor.text("Aw== is short") == "Aw== is short"


@pytest.mark.parametrize("secret", ['pa"ss', "back\\slash", "pässwörd", "two\nlines-of-it"])
def test_a_secret_is_redacted_where_json_or_repr_escape_it(secret):
    redactor = Redactor([secret])
    for shown in (json.dumps(secret), json.dumps(secret, ensure_ascii=False), repr(secret), repr(KeyError(secret))):
        assert redactor.text(f"x {shown} y") in (f'x "{REDACTED}" y', f"x '{REDACTED}' y", f"x KeyError('{REDACTED}') y",
                                                 f'x KeyError("{REDACTED}") y'), shown


def test_a_yaml_alias_bomb_is_refused_not_expanded(workflow):
    lol = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join([f'*{chr(ord(c) - 1)}'] * 10)}]\n" for c in "bcdefghi"
    )
    write(workflow / ".secrets.yaml", lol)
    with pytest.raises(SecretsError, match=r"\.secrets\.yaml: invalid YAML: .*document too large"):
        load_secrets(workflow, mount_dir=None)
