"""``harper-certd validate`` and ``check``: output, JSON shape and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12

from harper_certd import devca
from harper_certd.cli import main
from harper_certd.problems import problem
from harper_certd.roles import SetPaths
from harper_certd.troubleshoot import openssl_commands


@pytest.fixture(scope="module")
def ca() -> devca.Issued:
    return devca.make_ca("CLI Root")


@pytest.fixture
def good(tmp_path: Path, ca: devca.Issued) -> SetPaths:
    leaf = devca.make_leaf(ca, "nodea", dns=["nodea"], ips=["127.0.0.2"])
    return devca.write_set(tmp_path / "good", leaf, [ca])


def _args(paths: SetPaths) -> list[str]:
    return ["validate", "--cert", str(paths.cert), "--key", str(paths.key), "--ca", str(paths.ca)]


def test_validate_json_shape(good: SetPaths, capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints one object with valid, problems and the certificate's details."""
    assert main([*_args(good), "--json", "--hostname", "nodea"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] is True
    assert out["problems"] == []
    cert = out["certificate"]
    assert cert["subject"] == "CN=nodea"
    assert cert["san"] == {"dns": ["nodea"], "ip": ["127.0.0.2"]}
    assert cert["key"] == {"type": "EC secp256r1", "size": 256}
    assert len(cert["sha256"]) == 64
    assert [c["subject"] for c in cert["chain"]] == ["CN=nodea", "CN=CLI Root"]


def test_validate_exit_1_with_code(good: SetPaths, capsys: pytest.CaptureFixture[str]) -> None:
    """An invalid set exits 1 and names the code and the openssl command to see it."""
    assert main([*_args(good), "--hostname", "nodeb"]) == 1
    out = capsys.readouterr().out
    assert "hostname_mismatch" in out
    assert "INVALID" in out


def test_validate_at_instant(good: SetPaths, capsys: pytest.CaptureFixture[str]) -> None:
    """--at in the future makes the same set expired."""
    assert main([*_args(good), "--at", "2099-01-01T00:00:00Z", "--json"]) == 1
    codes = [p["code"] for p in json.loads(capsys.readouterr().out)["problems"]]
    assert "expired" in codes


def test_validate_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad flag, a bad instant or files that cannot be read exit 2."""
    with pytest.raises(SystemExit) as bad_flag:
        main(["validate", "--cert", "x"])
    assert bad_flag.value.code == 2
    with pytest.raises(SystemExit) as bad_at:
        main(["validate", "--cert", "a", "--key", "b", "--ca", "c", "--at", "yesterday"])
    assert bad_at.value.code == 2
    missing = SetPaths(tmp_path / "a", tmp_path / "b", tmp_path / "c")
    assert main(_args(missing)) == 2
    out = capsys.readouterr().out
    assert "does not exist" in out
    assert "see: openssl" not in out  # no command to look at a file that is not there


def test_console_script_runs(good: SetPaths) -> None:
    """`python -m harper_certd validate` works as a real process."""
    proc = subprocess.run(
        [sys.executable, "-m", "harper_certd", *_args(good), "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["valid"] is True


def test_validate_does_not_import_daemon_libraries(good: SetPaths) -> None:
    """The validate path stays lean: no watchdog, psutil or structlog imported, nor shutil
    (argparse's help formatter imports it for the terminal's width: cliout.Formatter)."""
    code = (
        "import sys\nfrom harper_certd.cli import main\n"
        f"main({_args(good)!r})\n"
        "print(sorted(m for m in ('watchdog', 'psutil', 'structlog', 'shutil')"
        " if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert proc.stdout.strip().splitlines()[-1] == "[]"


# --- check -----------------------------------------------------------------------------


def _harper_root(tmp_path: Path, config: dict[str, Any]) -> Path:
    root = tmp_path / "hdb"
    (root / "keys").mkdir(parents=True, exist_ok=True)
    (root / "harperdb-config.yaml").write_text(yaml.safe_dump(config))
    return root


def _tls(root: Path) -> dict[str, str]:
    return {
        "certificate": str(root / "keys" / "certificate.pem"),
        "certificateAuthority": str(root / "keys" / "ca.pem"),
        "privateKey": str(root / "keys" / "privateKey.pem"),
    }


def test_check_reports_each_set(
    tmp_path: Path, ca: devca.Issued, capsys: pytest.CaptureFixture[str]
) -> None:
    """tls (replication: cluster) and operationsApi.tls (server) are each checked."""
    root = tmp_path / "hdb"
    leaf = devca.make_leaf(ca, "nodea")
    devca.write_set(root / "keys", leaf, [ca])
    ops_leaf = devca.make_leaf(ca, "ops", eku=[devca.CLUSTER_EKU[0]])
    devca.write_set(root / "keys" / "ops", ops_leaf, [ca])
    config = {
        "replication": {"hostname": "nodea", "securePort": 9933},
        "tls": _tls(root),
        "operationsApi": {
            "network": {"securePort": 9925},
            "tls": {
                "certificate": "ops/certificate.pem",  # relative to <root>/keys, as Harper does
                "certificateAuthority": "ops/ca.pem",
                "privateKey": "ops/privateKey.pem",
            },
        },
    }
    _harper_root(tmp_path, config)
    assert main(["check", "--harper-root", str(root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(s["where"], s["purpose"]) for s in out["sets"]] == [
        ("tls", "cluster"),
        ("operationsApi.tls", "server"),
    ]
    assert out["secure_ports"] == {"replication": 9933, "operationsApi": 9925}
    days = out["sets"][0]["report"]["ca_file"][0]["days_left"]
    assert 3640 < days < 3651


def test_check_names_openssl_commands(
    tmp_path: Path, ca: devca.Issued, capsys: pytest.CaptureFixture[str]
) -> None:
    """A node certificate for the wrong name fails with the openssl commands to see why."""
    root = tmp_path / "hdb"
    devca.write_set(root / "keys", devca.make_leaf(ca, "nodeb"), [ca])
    _harper_root(tmp_path, {"replication": {"hostname": "nodea"}, "tls": _tls(root)})
    assert main(["check", "--harper-root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "hostname_mismatch" in out
    assert f"openssl x509 -in {root / 'keys' / 'certificate.pem'} -noout -text" in out


def test_check_legacy_insecure_downgrades_names(
    tmp_path: Path, ca: devca.Issued, capsys: pytest.CaptureFixture[str]
) -> None:
    """With clustering.tls.insecure a name mismatch is a warning that blocks turning it off."""
    root = tmp_path / "hdb"
    devca.write_set(root / "keys", devca.make_leaf(ca, "other"), [ca])
    tls = {**_tls(root), "insecure": True, "verify": True}
    _harper_root(tmp_path, {"clustering": {"nodeName": "nodea", "tls": tls}})
    assert main(["check", "--harper-root", str(root), "--json"]) == 0
    problems = json.loads(capsys.readouterr().out)["sets"][0]["report"]["problems"]
    assert [(p["code"], p["severity"]) for p in problems] == [("hostname_mismatch", "warning")]
    assert "insecure" in problems[0]["message"]


def test_check_fresh_install_keeps_certificates_in_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fresh 4.7 config naming only tls.privateKey is explained, with how to move to files;
    with nothing checked, check does not say "fit" and exits 1 (a newcomer took the 0 and
    "All certificate sets are fit." for a checked node)."""
    root = _harper_root(tmp_path, {"tls": {"privateKey": "/x/privateKey.pem"}})
    assert main(["check", "--harper-root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "system.hdb_certificate" in out
    assert "certificateAuthority" in out
    # a folder of their own, not over Harper's own key (install.md; a newcomer saw both)
    assert f"{root / 'keys' / 'replication'}, say, not over Harper's own" in out
    assert "No certificate set was checked" in out
    assert "are fit" not in out


def test_check_tls_list_with_hostnames(
    tmp_path: Path, ca: devca.Issued, capsys: pytest.CaptureFixture[str]
) -> None:
    """A list of tls entries is checked entry by entry against each entry's host names."""
    root = tmp_path / "hdb"
    devca.write_set(root / "keys" / "a", devca.make_leaf(ca, "a.example"), [ca])
    devca.write_set(root / "keys" / "b", devca.make_leaf(ca, "b.example"), [ca])
    entries = [
        {
            "hostname": "a.example",
            "certificate": "a/certificate.pem",
            "certificateAuthority": "a/ca.pem",
            "privateKey": "a/privateKey.pem",
        },
        {
            "hostnames": ["b.example", "c.example"],
            "certificate": "b/certificate.pem",
            "certificateAuthority": "b/ca.pem",
            "privateKey": "b/privateKey.pem",
        },
    ]
    _harper_root(tmp_path, {"tls": entries})
    assert main(["check", "--harper-root", str(root), "--json"]) == 1
    sets = json.loads(capsys.readouterr().out)["sets"]
    assert [s["where"] for s in sets] == ["tls[0]", "tls[1]"]
    assert sets[0]["report"]["valid"] is True
    assert [p["code"] for p in sets[1]["report"]["problems"]] == ["hostname_mismatch"]


def test_check_missing_root_is_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A root without harperdb-config.yaml exits 2 with a sentence."""
    assert main(["check", "--harper-root", str(tmp_path / "nope")]) == 2
    assert "ROOTPATH" in capsys.readouterr().err


def test_demo_runs() -> None:
    """The README's first command ends with a demo that exits 0."""
    proc = subprocess.run(
        [sys.executable, "-m", "harper_certd", "demo"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_check_wildcard_node_certificate_is_refused(
    tmp_path: Path, ca: devca.Issued, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wildcard replication certificate fails check: Harper needs the node name verbatim."""
    root = tmp_path / "hdb"
    devca.write_set(root / "keys", devca.make_leaf(ca, "n", dns=["*.cluster.test"]), [ca])
    _harper_root(tmp_path, {"replication": {"hostname": "nodea.cluster.test"}, "tls": _tls(root)})
    assert main(["check", "--harper-root", str(root), "--json"]) == 1
    problems = json.loads(capsys.readouterr().out)["sets"][0]["report"]["problems"]
    assert [p["code"] for p in problems] == ["node_name_not_verbatim"]


GC_PROBE = """\
import gc, sys
from harper_certd import entry
sys.argv = ["harper-certd", *sys.argv[1:]]
code = entry.main()
print("exit", code, "collector", gc.isenabled())
"""


def test_the_collector_is_off_for_a_command_and_on_for_the_daemon(
    good: SetPaths, tmp_path: Path
) -> None:
    """The console script starts every command with Python's cyclic collector off (its
    passes over the imports' objects are start-up cost); ``run`` turns it back on before
    anything else (here it then stops at a configuration that does not exist, exit 2)."""

    def probe(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", GC_PROBE, *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return done.stdout.strip().splitlines()[-1]

    assert probe(*_args(good), "--node", "none") == "exit 0 collector False"
    assert probe("run", "--config", str(tmp_path / "missing.yaml")) == "exit 2 collector True"


_COLUMNS = (
    "import shutil, sys\n"
    "from harper_certd.cliout import terminal_columns\n"
    "print(terminal_columns(), shutil.get_terminal_size().columns, file=sys.stderr)\n"
)


@pytest.mark.parametrize("columns", [None, "57", "0", "wide"])
def test_help_is_as_wide_as_shutil_says(columns: str | None) -> None:
    """cliout.terminal_columns gives shutil's width: on a real terminal (a pty of 73
    columns), with COLUMNS set, zero or not a number."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    main_fd, child_fd = pty.openpty()
    try:
        fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 73, 0, 0))
        env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
        if columns is not None:
            env["COLUMNS"] = columns
        done = subprocess.run(
            [sys.executable, "-c", _COLUMNS],
            stdout=child_fd,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            check=True,
            timeout=60,
        )
    finally:
        os.close(child_fd)
        os.close(main_fd)
    ours, theirs = done.stderr.split()
    assert ours == theirs
    assert ours == ("57" if columns == "57" else "73")


@pytest.mark.parametrize("role", ["cert", "key", "ca"])
def test_validate_does_not_wait_on_a_fifo(tmp_path: Path, good: SetPaths, role: str) -> None:
    """A FIFO where a file of the set should be (a local user's trap, or a mistake): the
    console script's early read for Node and the analysis both open it without blocking, so
    ``validate`` answers at once that it is not a regular file (exit 2, usage), with Node on
    PATH or not.  Before, the early read's open() waited for a writer forever."""
    fifo = tmp_path / f"{role}.fifo"
    os.mkfifo(fifo)
    files = {"cert": good.cert, "key": good.key, "ca": good.ca} | {role: fifo}
    args = ["--cert", str(files["cert"]), "--key", str(files["key"]), "--ca", str(files["ca"])]
    for extra in ([], ["--node", "none"]):
        done = subprocess.run(
            [sys.executable, "-m", "harper_certd", "validate", *args, *extra],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, done.stdout + done.stderr
        assert f"{fifo} is not a regular file" in done.stdout


def _harper_style_set(folder: Path) -> None:
    """A set named as Harper 4.x names its own certificates: ``C=USA`` (three letters where
    X.520 allows two), which OpenSSL and Node load; a CA and a cluster leaf for ``nodea``."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn: str) -> x509.Name:
        usa = x509.NameAttribute(NameOID.COUNTRY_NAME, "USA", _validate=False)
        return x509.Name([usa, x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = dt.datetime.now(dt.UTC)
    ca_key, leaf_key = devca.make_key(), devca.make_key()
    ca = (
        x509.CertificateBuilder(name("Harper Style Root"), name("Harper Style Root"))
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder(ca.subject, name("nodea"))
        .public_key(leaf_key.public_key())
        .serial_number(2)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=60))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("nodea"), x509.IPAddress(ipaddress.ip_address("127.0.0.2"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    from cryptography.hazmat.primitives import serialization

    (folder / "certificate.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    devca.write_private(folder / "privateKey.pem", devca.key_pem(leaf_key))


def test_harper_country_name_gives_no_library_warning(tmp_path: Path) -> None:
    """Harper's own certificates say C=USA; `check`, `status` and `install` print no Python
    warning about it (a newcomer saw cryptography's UserWarning on stderr of each, and
    certd.library_message in the daemon's log), and the set is judged as any other."""
    from nodefix import make_node, run_cli

    node = make_node(tmp_path, method="none")
    keys = node.root / "keys"
    _harper_style_set(keys)
    source = tmp_path / "harper-style"
    source.mkdir()
    _harper_style_set(source)
    config = str(node.write_config())
    runs = {
        "check": run_cli("check", "--harper-root", str(node.root)),
        "status": run_cli("status", "--no-probe", "--config", config),
        "install": run_cli("install", "--config", config, str(source)),
    }
    for command, done in runs.items():
        assert "Warning" not in done.stderr, (command, done.stderr)
        assert "Attribute's length" not in done.stdout + done.stderr, command
    assert runs["check"].returncode == 0, runs["check"].stdout
    assert runs["install"].returncode == 0, runs["install"].stdout + runs["install"].stderr


@pytest.mark.parametrize("code", ["key_unreadable", "key_mismatch"])
def test_the_openssl_commands_for_a_key_never_print_it(
    tmp_path: Path, ca: devca.Issued, code: str
) -> None:
    """The commands shown for a key problem, run by a person on a key that does parse, never
    print the private key (a newcomer: ``openssl pkey -noout -text`` did); they work for an
    EC key too (the modulus commands were RSA only)."""
    devca.write_set(tmp_path, devca.make_leaf(ca, "nodea"), [ca])
    paths = SetPaths(tmp_path / "certificate.pem", tmp_path / "privateKey.pem", tmp_path / "ca.pem")
    secret = serialization.load_pem_private_key(paths.key.read_bytes(), None)
    assert isinstance(secret, ec.EllipticCurvePrivateKey)
    scalar = secret.private_numbers().private_value.to_bytes(32, "big").hex()
    commands = openssl_commands(problem(code, "test"), paths)
    assert commands
    for command in commands:
        done = subprocess.run(
            ["sh", "-c", command], capture_output=True, text=True, timeout=30, check=False
        )
        assert done.returncode == 0, (command, done.stderr)
        printed = (done.stdout + done.stderr).replace(":", "").replace("\n", "").replace(" ", "")
        assert "PRIVATE KEY" not in done.stdout
        assert "priv" not in done.stdout
        assert scalar not in printed.lower()


def test_a_der_file_is_shown_by_commands_that_read_der(
    tmp_path: Path, ca: devca.Issued, capsys: pytest.CaptureFixture[str]
) -> None:
    """A binary (DER) key or certificate: the ``see:`` command reads it as DER (a newcomer's
    ``openssl pkey -in key.der -pubout`` only failed), and prints no private key."""
    leaf = devca.make_leaf(ca, "nodea")
    paths = devca.write_set(tmp_path, leaf, [ca])
    secret = serialization.load_pem_private_key(leaf.key_pem, None)
    paths.key.write_bytes(
        secret.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths.cert.write_bytes(leaf.cert.public_bytes(serialization.Encoding.DER))
    assert main([*_args(paths), "--node", "none"]) == 1
    out = capsys.readouterr().out
    for command in (
        f"openssl pkey -inform der -in {paths.key} -pubout",
        f"openssl x509 -inform der -in {paths.cert} -noout -text",
    ):
        assert f"see: {command}" in out, out
        done = subprocess.run(command.split(), capture_output=True, text=True, check=False)
        assert done.returncode == 0, (command, done.stderr)
        assert "PRIVATE KEY" not in done.stdout


def test_a_pkcs12_file_gets_no_openssl_command_that_fails_on_it(
    tmp_path: Path, ca: devca.Issued, capsys: pytest.CaptureFixture[str]
) -> None:
    """A certificate file that is a PKCS#12 bundle: the problem's sentence gives the openssl
    pkcs12 commands that split it, and no ``see:`` line sends the person to ``openssl x509``,
    which cannot read it (a newcomer's field case 07)."""
    leaf = devca.make_leaf(ca, "nodea")
    devca.write_set(tmp_path, leaf, [ca])
    key = serialization.load_pem_private_key(leaf.key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    (tmp_path / "certificate.pem").write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"n", key, leaf.cert, [ca.cert], serialization.BestAvailableEncryption(b"pw")
        )
    )
    paths = SetPaths(tmp_path / "certificate.pem", tmp_path / "privateKey.pem", tmp_path / "ca.pem")
    assert main([*_args(paths), "--node", "none"]) == 1
    out = capsys.readouterr().out
    assert "cert_unreadable" in out
    assert "openssl pkcs12 -in" in out
    assert "see: openssl x509" not in out
