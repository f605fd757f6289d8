"""Bad input is one clear sentence and exit 2, before anything is read from or sent to a
server: the TSIG key file, the [dns] config, batch files, owner names and PTR values.

The pure validation tests need no lab; the few that prove nothing reached BIND (or that
a PTR lands where it should) run against the lab's real primary and secondary.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from debvisor_core.errors import BadInput
from debvisor_core.testing import one_error

ZONE = "lab.debvisor.test"
RZONE = "0.77.10.in-addr.arpa"
# Bytes that are not UTF-8 (0xed at position 1, as in the review), then secret-ish text.
BINARY_KEY = b"\x01\xed\x9f\xbfTOPSECRETKEYMATERIAL\x00\xff"


def _cfg(**extra: Any) -> Any:
    """A parsed config with the lab's zone names; the addresses are never contacted."""
    from debvisor_dns.config import parse

    zones = {ZONE: {"primaries": ["127.0.0.1:9"]}, RZONE: {"primaries": ["127.0.0.1:9"]}}
    return parse({"zones": zones, **extra}, "/etc/debvisor/debvisor.toml")


@pytest.fixture
def offline(dv_state: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """A config whose primary is a closed port: any request to a server would fail with
    a different message (exit 3), so exit 2 proves the input was refused first."""
    monkeypatch.setenv("DEBVISOR_PLUGINS", "dns")

    def write(**dns: Any) -> Path:
        key = tmp_path / "ok.key"
        if not key.exists():
            fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
            os.write(fd, b'key "k" { algorithm hmac-sha256; secret "c2VjcmV0"; };\n')
            os.close(fd)
        base = {"tsig_key_file": str(key), "timeout": 0.2,
                "zones": {ZONE: {"primaries": ["127.0.0.1:9"]}}}
        return dv_state.config({"dns": {**base, **dns}})

    return write


# --- 1. TSIG key file: mode before content, bytes, no echo ------------------------------

def _write(path: Path, data: bytes, mode: int) -> Path:
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


def test_binary_key_file_with_loose_mode_is_refused_for_its_mode(tmp_path: Path) -> None:
    from debvisor_dns.tsigkey import TsigKeyError, read_tsig_keyfile

    p = _write(tmp_path / "bin.key", BINARY_KEY, 0o644)
    with pytest.raises(TsigKeyError) as exc:
        read_tsig_keyfile(p)
    assert exc.value.message == (f"TSIG key file {p} is readable by others (mode 0644); "
                                 f"run: chmod 600 {p}")
    assert "TOPSECRET" not in exc.value.message and "\\x" not in exc.value.message


def test_binary_key_file_owner_only_is_bad_input_without_content(tmp_path: Path) -> None:
    from debvisor_dns.tsigkey import TsigKeyError, read_tsig_keyfile

    p = _write(tmp_path / "bin.key", BINARY_KEY, 0o600)
    with pytest.raises(TsigKeyError) as exc:
        read_tsig_keyfile(p)
    msg = exc.value.message
    assert msg == (f"The TSIG key file {p} is not a text BIND key file (it is not UTF-8); "
                   "write it with tsig-keygen.")
    assert exc.value.__cause__ is None and exc.value.__suppress_context__


def test_key_file_directory_fifo_and_huge_file_are_one_sentence(tmp_path: Path) -> None:
    from debvisor_dns.tsigkey import TsigKeyError, read_tsig_keyfile

    d = tmp_path / "keydir"
    d.mkdir(mode=0o700)
    fifo = tmp_path / "key.fifo"
    os.mkfifo(fifo, 0o600)  # opening it must not block the command
    huge = _write(tmp_path / "huge.key", b"#" * (65 * 1024), 0o600)
    for path, words in [(d, "is not a regular file (it is a directory)"),
                        (fifo, "is not a regular file (it is a FIFO)"),
                        (huge, "is larger than 64 KiB"),
                        (tmp_path / "missing.key", "does not exist")]:
        with pytest.raises(TsigKeyError) as exc:
            read_tsig_keyfile(path)
        assert words in exc.value.message and str(path) in exc.value.message


def test_cli_binary_key_file_is_exit_2(dv: Any, offline: Any, tmp_path: Path) -> None:
    key = _write(tmp_path / "bin.key", BINARY_KEY, 0o644)
    offline(tsig_key_file=str(key))
    res = dv("dns", "update", "x", "10.77.0.5", "--dry-run")
    assert res.code == 2, res
    assert f"(mode 0644); run: chmod 600 {key}" in one_error(res.stderr)
    os.chmod(key, 0o600)
    res = dv("dns", "update", "x", "10.77.0.5", "--dry-run")
    assert res.code == 2, res
    assert "is not UTF-8" in one_error(res.stderr)
    assert "TOPSECRET" not in res.stderr + res.stdout and "0xed" not in res.stderr


# --- 2. [dns] config types --------------------------------------------------------------

@pytest.mark.parametrize("key, value, words", [
    ("vm_zone", 5, "vm_zone must be a non-empty string, not 5"),
    ("algorithm", 5, "algorithm must be a non-empty string, not 5"),
    ("algorithm", "hmac-sha999", "algorithm must be one of"),
    ("tsig_key_file", 5, "tsig_key_file must be a non-empty string, not 5"),
    ("timeout", float("nan"), "timeout must be a number of seconds > 0, not nan"),
    ("propagation_timeout", float("inf"), "must be a number of seconds > 0, not inf"),
    ("update_timeout", True, "update_timeout must be a number of seconds > 0, not True"),
    ("timeout", "2", "timeout must be a number of seconds > 0, not '2'"),
    ("timeout", 0, "timeout must be a number of seconds > 0, not 0"),
    ("default_ttl", True, "default_ttl must be a whole number of seconds from 0 to 2147483647, "
                          "not True"),
    ("default_ttl", 1.9, "default_ttl must be a whole number of seconds from 0 to 2147483647, "
                         "not 1.9"),
    ("default_ttl", 99999999999, "from 0 to 2147483647, not 99999999999"),
    ("default_ttl", -1, "from 0 to 2147483647, not -1"),
    ("vm_ptr", "false", "vm_ptr must be true or false, not 'false'"),
    ("dnssec", "maybe", "dnssec must be auto, require or off"),
    ("vm_zone", "a..b", "vm_zone must be a DNS zone name"),
    ("vm_zone", "  ", "vm_zone must be a non-empty string"),
])
def test_bad_config_values_name_key_and_file(key: str, value: Any, words: str) -> None:
    with pytest.raises(BadInput) as exc:
        _cfg(**{key: value})
    assert exc.value.message.startswith(f"config /etc/debvisor/debvisor.toml: [dns] {key} ")
    assert words in exc.value.message


@pytest.mark.parametrize("zones, words", [
    ({ZONE: {"primaries": [5]}}, f'/etc/x.toml: [dns.zones."{ZONE}"] primaries must be a '
                                 "list of addresses"),
    ({ZONE: {"primaries": ["ns1"]}}, "has 'ns1', which is not an IP address"),
    ({ZONE: {"servers": ["127.0.0.1"]}}, "primaries is missing or empty"),
    ({ZONE: {"primaries": ["127.0.0.1"], "tsig_key_file": 7}}, "tsig_key_file must be"),
    ({"bad zone!": {"primaries": ["127.0.0.1"]}}, '[dns.zones."bad zone!"] is not a DNS zone name'),
    ({ZONE: 5}, f'/etc/x.toml: [dns] zones."{ZONE}" must be a table, not 5'),
])
def test_bad_zone_tables_name_key_and_file(zones: dict[str, Any], words: str) -> None:
    from debvisor_dns.config import parse

    with pytest.raises(BadInput) as exc:
        parse({"zones": zones}, "/etc/x.toml")
    assert words in exc.value.message


def test_good_config_values_keep_their_types() -> None:
    cfg = _cfg(default_ttl=0, timeout=1, vm_zone="Lab.Debvisor.Test.", vm_ptr=False)
    assert (cfg.default_ttl, cfg.timeout, cfg.vm_zone, cfg.vm_ptr) == (0, 1.0, f"{ZONE}.", False)
    assert isinstance(cfg.timeout, float)


def test_cli_bad_config_is_exit_2_naming_the_file(dv: Any, offline: Any) -> None:
    path = offline(default_ttl=True, vm_zone=5)
    res = dv("dns", "update", "x", "10.77.0.5", "--dry-run")
    assert res.code == 2, res
    err = one_error(res.stderr)
    assert f"config {path}: [dns] default_ttl must be a whole number" in err


# --- 3. batch files -----------------------------------------------------------------------

def test_batch_file_not_utf8_is_bad_input(tmp_path: Path) -> None:
    from debvisor_dns.batch import parse

    p = tmp_path / "b.txt"
    p.write_bytes(b"update a 10.77.0.1\nupdate b \xff\xfe 10.77.0.2\n")
    with pytest.raises(BadInput) as exc:
        parse(p)
    assert exc.value.message == f"batch file {p} is not UTF-8 text (line 2 has a byte that " \
                                "is not UTF-8)"


@pytest.mark.parametrize("entry, words", [
    ({"name": ["x"], "value": "10.77.0.1"}, 'name must be a string, not ["x"]'),
    ({"name": "x", "value": 167772161}, "value must be a string, not 167772161"),
    ({"name": "x", "type": 1, "value": "10.77.0.1"}, "type must be a string"),
    ({"name": "x", "value": "10.77.0.1", "ttl": True}, "ttl must be a whole number, not true"),
    ({"name": "x", "value": "10.77.0.1", "ttl": 1.5}, "ttl must be a whole number, not 1.5"),
    ({"name": "x", "value": "10.77.0.1", "ttl": "60"}, 'ttl must be a whole number, not "60"'),
    ({"name": "x", "value": "10.77.0.1", "ttl": 0}, "TTL 0 is out of range"),
    ({"name": "x", "vaule": "10.77.0.1"}, "unknown key 'vaule'"),
    ({"name": "x"}, "an update needs a value"),
    ({"action": "purge", "name": "x"}, "unknown action 'purge'"),
    ({"action": "delete", "name": "x", "value": "10.77.0.1"}, "takes only a name and a type"),
])
def test_json_batch_fields_are_type_checked(tmp_path: Path, entry: dict[str, Any],
                                            words: str) -> None:
    from debvisor_dns.batch import parse

    p = tmp_path / "b.json"
    p.write_text(json.dumps([{"name": "ok", "value": "10.77.0.9"}, entry]))
    with pytest.raises(BadInput) as exc:
        parse(p)
    assert exc.value.message.startswith(f"{p}: entry 2: ")
    assert words in exc.value.message


def test_json_batch_ttl_without_type_is_kept(tmp_path: Path) -> None:
    from debvisor_dns.batch import parse

    p = tmp_path / "b.json"
    p.write_text('[{"name": "x", "value": "10.77.0.1", "ttl": 60}]')
    [e] = parse(p)
    assert (e.action, e.name, e.type, e.value, e.ttl) == ("update", "x", None, "10.77.0.1", 60)


def test_cli_batch_errors_are_exit_2(dv: Any, offline: Any, tmp_path: Path) -> None:
    offline()
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("update caf\xe9 10.77.0.1\n".encode("latin-1"))
    res = dv("dns", "update", "--batch", str(bad), "--dry-run")
    assert res.code == 2, res
    assert "is not UTF-8 text" in one_error(res.stderr)
    js = tmp_path / "b.json"
    js.write_text('[{"name": ["x"], "value": "10.77.0.1"}]')
    res = dv("dns", "update", "--batch", str(js), "--dry-run")
    assert res.code == 2, res
    assert "entry 1: name must be a string" in one_error(res.stderr)
    txt = tmp_path / "b.txt"
    txt.write_text("update ok 10.77.0.1\nupdate vm2 vm-name\n")
    res = dv("dns", "update", "--batch", str(txt), "--dry-run")
    assert res.code == 2, res
    assert f"{txt}:2: 'vm-name' is not an IP address" in one_error(res.stderr)


# --- 4. owner names ------------------------------------------------------------------------

@pytest.mark.parametrize("name, rdtype, zone, words", [
    ("a\\999", "A", None, "'a\\999' is not a valid DNS name: An escaped code"),
    ("a" * 64, "A", None, "is not a valid DNS name"),
    (".".join(["a" * 60] * 5), "A", None, "is not a valid DNS name"),
    ("bad name!", "A", None, "'bad name!' is not a valid owner name for an A record"),
    ("_x", "A", None, "not a valid owner name for an A record"),
    ("-x", "AAAA", None, "not a valid owner name for an AAAA record"),
    ("a*b", "A", None, "not a valid owner name"),
    (f"x.*.{ZONE}", "A", None, "not a valid owner name"),  # "*" only as the first label
    ("a\\.", "A", None, "'a\\.' is not a valid owner name"),
    ("bad name!", "TXT", None, "'bad name!' is not a valid owner name for a record"),
    ("a\\.lab.debvisor.test", "A", None, "a\\.lab.debvisor.test. is outside any configured zone"),
    ("a\\.lab.debvisor.test", "A", ZONE, "a\\.lab.debvisor.test. is outside zone lab.debvisor.test"),
    ("xlab.debvisor.test.", "A", ZONE, "xlab.debvisor.test. is outside zone"),
])
def test_bad_owner_names_are_bad_input(name: str, rdtype: str, zone: str | None,
                                       words: str) -> None:
    from debvisor_dns.records import resolve

    with pytest.raises(BadInput) as exc:
        resolve(_cfg(), name, zone, rdtype)
    assert words in exc.value.message


@pytest.mark.parametrize("name, rdtype, fqdn", [
    ("vm-1", "A", f"vm-1.{ZONE}."),
    ("VM1.Lab.Debvisor.Test", "A", f"vm1.{ZONE}."),
    ("*", "A", f"*.{ZONE}."),
    ("_acme-challenge", "TXT", f"_acme-challenge.{ZONE}."),
    (f"_dmarc.mail.{ZONE}", "TXT", f"_dmarc.mail.{ZONE}."),
    (f"_acme-challenge.www.{ZONE}.", "CNAME", f"_acme-challenge.www.{ZONE}."),
    ("_old-service", None, f"_old-service.{ZONE}."),  # delete/show without --type
    ("10.77.0.9", "PTR", f"9.{RZONE}."),
    (ZONE, "A", f"{ZONE}."),
])
def test_good_owner_names_resolve(name: str, rdtype: str | None, fqdn: str) -> None:
    from debvisor_dns.records import resolve

    zone, got = resolve(_cfg(vm_zone=ZONE), name, None, rdtype)
    assert got == fqdn and zone.name in (f"{ZONE}.", f"{RZONE}.")


# --- 5. a single-label PTR value belongs to the forward zone -----------------------------

def test_single_label_ptr_value_uses_the_forward_zone() -> None:
    from debvisor_dns.records import canonical

    cfg = _cfg()  # one forward zone: it is the only candidate
    assert canonical("PTR", "host", cfg.zone(RZONE), cfg) == f"host.{ZONE}."
    assert canonical("PTR", "host.other.test.", cfg.zone(RZONE), cfg) == "host.other.test."


def test_single_label_ptr_value_is_ambiguous_without_vm_zone() -> None:
    from debvisor_dns.config import parse
    from debvisor_dns.records import canonical

    zones = {z: {"primaries": ["127.0.0.1:9"]} for z in (ZONE, "b.test", RZONE)}
    cfg = parse({"zones": zones})
    with pytest.raises(BadInput) as exc:
        canonical("PTR", "host", cfg.zone(RZONE), cfg)
    assert "PTR value 'host' is a single label and it is ambiguous" in exc.value.message
    cfg = parse({"zones": zones, "vm_zone": "b.test"})
    assert canonical("PTR", "host", cfg.zone(RZONE), cfg) == "host.b.test."
    with pytest.raises(BadInput) as exc:
        canonical("PTR", "x_y", cfg.zone(RZONE), cfg)  # BIND's check-names refuses it
    assert "PTR value 'x_y' is not a valid host name" in exc.value.message


# --- against the lab: nothing reaches BIND; the PTR lands in the forward zone ------------

@pytest.mark.lab
@pytest.mark.root
def test_invalid_owner_name_never_reaches_bind(dv: Any, lab_config: Any) -> None:
    lab = lab_config
    for bad in ("bad name!", "a\\.", "a\\.lab.debvisor.test", "a\\999"):
        res = dv("--json", "dns", "update", bad, "10.77.0.11", "--yes")
        assert res.code == 2, res
        one_error(res.stderr)
    res = dv("--json", "ops", "list")
    assert res.code == 0 and res.json == [], res  # no operation was started, none rolled back
    res = dv("--json", "dns", "update", "ok-after", "10.77.0.11", "--dry-run")
    assert res.code == 0, res  # the same config and lab accept a valid name
    assert lab.both("ok-after") == [(None, [])] * 2


@pytest.mark.lab
@pytest.mark.root
def test_relative_ptr_value_points_into_the_forward_zone(dv: Any, dv_state: Any,
                                                         lab_config: Any, name: str) -> None:
    lab = lab_config
    dv_state.config({"dns": {"vm_zone": lab.zone}}, base=dv_state.config_path)
    addr = f"10.77.0.{150 + int(name[-2:], 16) % 50}"
    rev = f"{addr.rsplit('.', 1)[1]}.{lab.rzone}."
    res = dv("--json", "dns", "update", addr, name, "--type", "PTR", "--yes")
    assert res.code == 0, res
    assert lab.both(rev, "PTR") == [(300, [f"{name}.{lab.zone}."])] * 2
    res = dv("dns", "update", "--rollback", "--yes")
    assert res.code == 0, res
    assert lab.both(rev, "PTR") == [(None, [])] * 2
