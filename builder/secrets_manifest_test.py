"""Deploy-time secrets: `.secrets/` and `.secrets.yaml` rules, checksum, redaction."""

from __future__ import annotations

import json

import pytest

from builder.errors import BuildError
from builder.secrets_manifest import (
    REDACTED,
    load_secret_data,
    read_secrets_dir,
    read_secrets_yaml,
    redact_secret,
    render_secret,
    secret_checksum,
)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_dir_files_become_entries_trimmed(tmp_path):
    write(tmp_path / ".secrets" / "github", '  {"token": "ghp_abc"}\n\n')
    write(tmp_path / ".secrets" / "api-token", "plain-token\n")
    loaded = load_secret_data(tmp_path)
    assert loaded.source == tmp_path / ".secrets"
    assert dict(loaded.data) == {"api-token": "plain-token", "github": '{"token": "ghp_abc"}'}
    assert loaded.ignored is None


def test_dir_skips_hidden_files_and_mounted_volume_links(tmp_path):
    secrets = tmp_path / ".secrets"
    write(secrets / "visible", "v")
    write(secrets / ".hidden", "h")
    write(secrets / ".swp.github", "x")
    (secrets / "..data").mkdir()
    write(secrets / "..data" / "visible", "link target")
    assert read_secrets_dir(secrets) == {"visible": "v"}


def test_empty_dir_means_no_secret(tmp_path):
    (tmp_path / ".secrets").mkdir()
    write(tmp_path / ".secrets" / ".gitkeep", "")
    assert load_secret_data(tmp_path) is None


def test_no_sources_means_no_secret(tmp_path):
    assert load_secret_data(tmp_path) is None


def test_empty_dir_falls_back_to_yaml(tmp_path):
    (tmp_path / ".secrets").mkdir()
    write(tmp_path / ".secrets.yaml", "github:\n  token: t\n")
    loaded = load_secret_data(tmp_path)
    assert loaded.source == tmp_path / ".secrets.yaml"
    assert loaded.data == {"github": '{"token":"t"}'}


def test_dir_wins_over_yaml_and_yaml_is_reported_ignored(tmp_path):
    write(tmp_path / ".secrets" / "a", "from-dir")
    write(tmp_path / ".secrets.yaml", "b: from-yaml\n")
    loaded = load_secret_data(tmp_path)
    assert loaded.data == {"a": "from-dir"}
    assert loaded.ignored == tmp_path / ".secrets.yaml"


def test_yaml_keys_nested_values_json_scalars_text(tmp_path):
    path = write(
        tmp_path / ".secrets.yaml",
        "github:\n  token: ghp_abc123\nstripe:\n  api_key: sk_test\nplain: '  padded  '\n"
        "port: 5432\nflag: true\nlist: [1, two]\n",
    )
    data = read_secrets_yaml(path)
    assert data["github"] == '{"token":"ghp_abc123"}'
    assert json.loads(data["stripe"]) == {"api_key": "sk_test"}
    assert data["plain"] == "padded"
    assert data["port"] == "5432"
    assert data["flag"] == "true"
    assert json.loads(data["list"]) == [1, "two"]
    assert list(data) == sorted(data)


def test_empty_yaml_means_no_secret(tmp_path):
    write(tmp_path / ".secrets.yaml", "# nothing yet\n")
    assert load_secret_data(tmp_path) is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("- a\n- b\n", "expected a mapping"),
        ("github: [unclosed\n", "invalid YAML"),
        ("a: 1\n  b: 2\n", ".secrets.yaml:2: invalid YAML"),
        ("github:\n", "key 'github' has no value"),
        ("'bad/key': x\n", "not a valid Secret key"),
        ("base: &b {t: 1}\ngithub:\n  <<: *b\n", "github: YAML merge keys (<<) are not supported"),
    ],
)
def test_yaml_errors_name_the_file(tmp_path, text, expected):
    path = write(tmp_path / ".secrets.yaml", text)
    with pytest.raises(BuildError) as info:
        read_secrets_yaml(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_dir_skips_subdirectories_as_the_engine_does(tmp_path):
    secrets = tmp_path / ".secrets"
    (secrets / "nested").mkdir(parents=True)
    write(secrets / "nested" / "inner", "x")
    write(secrets / "top", "t")
    assert read_secrets_dir(secrets) == {"top": "t"}


def test_dir_rejects_binary_file(tmp_path):
    secrets = tmp_path / ".secrets"
    secrets.mkdir()
    (secrets / "blob").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(BuildError) as info:
        read_secrets_dir(secrets)
    assert str(secrets / "blob") in str(info.value) and "UTF-8" in str(info.value)


def test_dir_rejects_invalid_key(tmp_path):
    secrets = tmp_path / ".secrets"
    write(secrets / "has space", "x")
    with pytest.raises(BuildError, match="has space.*not a valid Secret key"):
        read_secrets_dir(secrets)


def test_oversized_secrets_rejected(tmp_path):
    write(tmp_path / ".secrets" / "big", "x" * (1024 * 1024 + 1))
    with pytest.raises(BuildError, match="1 MiB"):
        load_secret_data(tmp_path)


def test_checksum_changes_with_any_entry_and_ignores_order():
    base = {"a": "1", "b": "2"}
    assert secret_checksum(base) == secret_checksum({"b": "2", "a": "1"})
    assert secret_checksum(base) != secret_checksum({"a": "1", "b": "3"})
    assert secret_checksum(base) != secret_checksum({"a": "1", "b": "2", "c": ""})
    assert secret_checksum(base) != secret_checksum({"a": "1"})
    assert len(secret_checksum(base)) == 64


def test_checksum_is_not_a_plain_hash_and_differs_per_workflow():
    import hashlib
    import json

    data = {"token": "1234"}  # short enough to guess from a plain sha256
    plain = hashlib.sha256(json.dumps(data, separators=(",", ":")).encode()).hexdigest()
    here = secret_checksum(data, namespace="team-a", name="digest")
    assert here != plain
    assert here == secret_checksum(data, namespace="team-a", name="digest")  # stable: no roll without a change
    assert here != secret_checksum(data, namespace="team-b", name="digest")
    assert here != secret_checksum(data, namespace="team-a", name="other")


def test_render_secret_and_redaction():
    secret = render_secret("wf", "ns", {"l": "v"}, {"b": "2", "a": "1"})
    assert secret["kind"] == "Secret" and secret["type"] == "Opaque"
    assert secret["metadata"] == {"name": "wf-secrets", "namespace": "ns", "labels": {"l": "v"}}
    assert list(secret["stringData"]) == ["a", "b"]
    redacted = redact_secret(secret)
    assert redacted["stringData"] == {"a": REDACTED, "b": REDACTED}
    assert secret["stringData"]["a"] == "1", "the original is not modified"


def test_yaml_keys_are_names_as_written_as_the_engine_reads_them(tmp_path):
    path = write(tmp_path / ".secrets.yaml", "1: x\n0x1f: y\n")
    assert read_secrets_yaml(path) == {"0x1f": "y", "1": "x"}


def test_yaml_alias_bomb_is_refused_not_expanded(tmp_path):
    lol = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join([f'*{chr(ord(c) - 1)}'] * 10)}]\n" for c in "bcdefghi"
    )
    path = write(tmp_path / ".secrets.yaml", lol)
    with pytest.raises(BuildError, match=r"\.secrets\.yaml: invalid YAML: .*document too large \(more than 100000 values after aliases\)"):
        read_secrets_yaml(path)
