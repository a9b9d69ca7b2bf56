"""Tests for streams/api/keys.py: keys are stored hashed, looked up by id, reloaded on change."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from streams.api.keys import KeyStore, new_key, read_keys, write_keys
from streams.errors import ConfigError


def test_the_file_holds_the_hash_never_the_key(tmp_path):
    token, entry = new_key("acme", "billing service")
    path = tmp_path / "keys.json"
    write_keys(path, {entry.key_id: entry})
    text = path.read_text()
    assert token not in text and token.split(".")[1] not in text
    assert hashlib.sha256(token.encode()).hexdigest() in text
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert read_keys(path) == {entry.key_id: entry}


def test_a_key_finds_its_tenant_and_nothing_else_does(tmp_path):
    path = tmp_path / "keys.json"
    (acme, a), (globex, g) = new_key("acme"), new_key("globex")
    write_keys(path, {a.key_id: a, g.key_id: g})
    store = KeyStore(path)
    assert store.tenant_for(acme) == "acme"
    assert store.tenant_for(globex) == "globex"
    # acme's key id with globex's secret, a truncated key, garbage: no tenant.
    forged = acme.split(".")[0] + "." + globex.split(".")[1]
    for bad in (forged, acme[:-1], "", "Bearer " + acme, acme + "x"):
        assert store.tenant_for(bad) is None, bad


def test_revoking_and_adding_take_effect_without_a_restart(tmp_path):
    path = tmp_path / "keys.json"
    old, entry = new_key("acme")
    write_keys(path, {entry.key_id: entry})
    store = KeyStore(path)
    assert store.tenant_for(old) == "acme"
    new, other = new_key("acme")
    write_keys(path, {other.key_id: other})  # old revoked, new added
    assert store.tenant_for(old) is None
    assert store.tenant_for(new) == "acme"


def test_no_file_means_no_keys(tmp_path):
    store = KeyStore(tmp_path / "missing.json")
    assert len(store) == 0
    assert store.tenant_for(new_key("acme")[0]) is None


@pytest.mark.parametrize("content", [b"{", b"[]", b'{"keys": [{"key_id": "x"}]}'])
def test_a_broken_file_is_a_config_error(tmp_path, content):
    path = tmp_path / "keys.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="API keys file"):
        read_keys(path)


def test_tenant_ids_are_identifiers():
    with pytest.raises(ConfigError):
        new_key("acme corp")
