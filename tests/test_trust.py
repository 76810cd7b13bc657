"""The system trust store as OpenSSL would load it (``trust.system_store``), on real files."""

from __future__ import annotations

import ssl
from pathlib import Path

from harper_certd import devca, trust


def test_system_store_reads_bundle_and_hashed_dir_once_each(tmp_path: Path) -> None:
    """A bundle and a c_rehash directory: every certificate once, in first-seen order
    (the directory repeats the bundle's roots, as Debian's does), both PEM labels taken, a
    block whose base64 is broken or whose DER is no certificate skipped, files without a
    hashed name ignored, and the override replacing both."""
    a, b, c, d = (devca.make_ca(f"trust root {n}") for n in "abcd")
    x509_label = c.cert_pem.replace(b"CERTIFICATE-----", b"X509 CERTIFICATE-----")
    broken = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"
    not_a_cert = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(a.cert_pem + broken + b.cert_pem + not_a_cert)
    hashed = tmp_path / "certs"
    hashed.mkdir()
    (hashed / "0a1b2c3d.0").write_bytes(b.cert_pem)
    (hashed / "0a1b2c3d.1").write_bytes(x509_label + a.cert_pem)
    (hashed / "ffffffff.0").write_bytes(b"not pem at all")
    (hashed / "d.pem").write_bytes(d.cert_pem)  # no c_rehash name: OpenSSL never looks
    defaults = ssl.get_default_verify_paths()
    env = {defaults.openssl_cafile_env: str(bundle), defaults.openssl_capath_env: str(hashed)}
    store = trust.system_store(env=env)
    assert [cert.subject for cert in store.certs] == [
        a.cert.subject,
        b.cert.subject,
        c.cert.subject,
    ]
    assert store.contains(c.cert)
    assert not store.contains(d.cert)
    # same subject, another key: not the root OpenSSL would trust (matched on both)
    assert not store.contains(devca.make_ca("trust root c").cert)
    assert store.issuers_of([devca.make_leaf(b, "nodea").cert]) == (b.cert,)
    override = trust.system_store(hashed / "0a1b2c3d.1", env=env)
    assert override.certs == (c.cert, a.cert)
