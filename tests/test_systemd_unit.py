"""systemd/harper-certd.service: hardened (exposure <= 2.0), valid, and its choices hold."""

from __future__ import annotations

import ctypes.util
import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import harper_certd

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "harper-certd.service"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
EXEC_START = "/opt/harper-certd/bin/harper-certd"  # the venv of the README's install

needs_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze is not installed (Debian: apt-get install systemd)",
)


def _settings() -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, in order (keys may repeat)."""
    section, out = "", []
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run(
        [SYSTEMD_ANALYZE, *args], capture_output=True, text=True, timeout=120, check=False
    )


def _copy_with_existing_exec_start(directory: Path, extra: str = "") -> Path:
    """The unit, with ExecStart naming a binary that exists here (verify checks it)."""
    text = UNIT.read_text()
    if not Path(EXEC_START).exists():
        text = text.replace(
            f"ExecStart={EXEC_START} ", f"ExecStart={sys.executable} -m harper_certd "
        )
    copy = directory / UNIT.name
    copy.write_text(text.replace("[Service]\n", f"[Service]\n{extra}"))
    return copy


def test_unit_says_what_the_daemon_relies_on() -> None:
    """Type, notify access, watchdog, user, paths and reload are as the daemon expects."""
    service = {key: value for section, key, value in _settings() if section == "Service"}
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["WatchdogSec"] == "60"
    assert service["ExecStart"] == f"{EXEC_START} run --config /etc/harper-certd/config.yaml"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert (service["Restart"], service["RestartSec"]) == ("on-failure", "5")
    # Exit 2 is a configuration the daemon cannot use (harper_certd.run): restarting every
    # 5 s cannot mend it, so systemd must not loop on it.
    assert service["RestartPreventExitStatus"] == "2"
    assert (service["User"], service["Group"]) == ("harperdb", "harperdb")
    assert (service["StateDirectory"], service["StateDirectoryMode"]) == ("harper-certd", "0700")
    assert service["Environment"] == "ROOTPATH=/home/harperdb/hdb"
    assert service["ReadWritePaths"] == "/home/harperdb/hdb/keys"
    assert (service["IPAddressDeny"], service["IPAddressAllow"]) == ("any", "localhost")
    assert service["RestrictAddressFamilies"] == "AF_UNIX AF_INET AF_INET6"
    assert service["CapabilityBoundingSet"] == ""
    assert service["UMask"] == "0077"


@needs_analyze
def test_exposure_is_at_most_2() -> None:
    """systemd-analyze security --offline rates the unit 2.0 or better."""
    text = _analyze("security", "--offline=true", "--threshold=20", str(UNIT))
    found = re.search(r"Overall exposure level for harper-certd\.service: (\d+\.\d+)", text.stdout)
    assert found, text.stdout + text.stderr
    report = _analyze("security", "--offline=true", "--json=short", str(UNIT))
    failing = [
        (item["name"], item["exposure"])
        for item in json.loads(report.stdout)
        if item["exposure"] not in (None, 0, 0.0)
    ]
    assert float(found[1]) <= 2.0, failing
    assert text.returncode == 0, text.stderr


@needs_analyze
def test_verify_is_clean(tmp_path: Path) -> None:
    """systemd-analyze verify has nothing to say about the unit (ExecStart made to exist)."""
    result = _analyze("verify", "--man=no", str(_copy_with_existing_exec_start(tmp_path)))
    about_us = [
        line for line in (result.stdout + result.stderr).splitlines() if "harper-certd" in line
    ]
    assert (result.returncode, about_us) == (0, [])


@needs_analyze
def test_verify_would_see_a_mistake(tmp_path: Path) -> None:
    """The verify check is not vacuous: a misspelt setting in the same copy is reported."""
    copy = _copy_with_existing_exec_start(tmp_path, extra="ProtectSytem=strict\n")
    result = _analyze("verify", "--man=no", str(copy))
    assert "ProtectSytem" in result.stdout + result.stderr


# systemd's MemoryDenyWriteExecute= filter (src/shared/seccomp-util.c,
# seccomp_memory_deny_write_execute, x86-64/arm64): EPERM for mmap asking for
# WRITE|EXEC, for mprotect/pkey_mprotect asking for EXEC, and for shmat with SHM_EXEC.
# Installed here with libseccomp through ctypes, then the command is exec'd under it.
_MDWE_EXEC = """
import ctypes, os, sys

lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)


class Cmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]


ALLOW, EPERM, MASKED_EQ = 0x7FFF0000, 0x00050000 | 1, 7
WRITE, EXEC, SHM_EXEC = 0x2, 0x4, 0o100000
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
lib.seccomp_rule_add_array.argtypes = [
    ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(Cmp)]
lib.seccomp_load.argtypes = [ctypes.c_void_p]
ctx = lib.seccomp_init(ALLOW)
assert ctx
rules = [(b"mmap", WRITE | EXEC), (b"mprotect", EXEC), (b"pkey_mprotect", EXEC),
         (b"shmat", SHM_EXEC)]
for name, mask in rules:
    cmp = Cmp(2, MASKED_EQ, mask, mask)
    nr = lib.seccomp_syscall_resolve_name(name)
    assert lib.seccomp_rule_add_array(ctx, EPERM, nr, 1, ctypes.byref(cmp)) == 0, name
assert lib.seccomp_load(ctx) == 0
os.execv(sys.argv[1], sys.argv[1:])
"""

# Imports every module of the package (the daemon's whole code, as it grows) and
# exercises the native parts: OpenSSL through cryptography and ssl, inotify, /proc.
_DAEMON_WORK = """
import importlib, mmap, pkgutil, ssl, tempfile
import harper_certd
for info in pkgutil.iter_modules(harper_certd.__path__, "harper_certd."):
    if not info.name.endswith("__main__"):
        importlib.import_module(info.name)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except PermissionError:
    pass
else:
    raise SystemExit("the MemoryDenyWriteExecute filter is not in force")
import psutil
import trustme
from cryptography import x509
from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer
ca = trustme.CA()
leaf = ca.issue_cert("nodea")
x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
leaf.configure_cert(context)
with tempfile.TemporaryDirectory() as watched:
    observer = Observer()
    observer.schedule(FileSystemEventHandler(), watched)
    observer.start()
    observer.stop()
    observer.join()
psutil.Process().cmdline()
print("ok")
"""

needs_seccomp = pytest.mark.skipif(
    ctypes.util.find_library("seccomp") is None, reason="libseccomp is not installed"
)


def _under_mdwe(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _MDWE_EXEC, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@needs_seccomp
def test_daemon_runs_under_memory_deny_write_execute() -> None:
    """Every harper_certd module and its native dependencies work under the unit's MDWE."""
    assert [m.name for m in pkgutil.iter_modules(harper_certd.__path__)]
    result = _under_mdwe(sys.executable, "-c", _DAEMON_WORK)
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr


@needs_seccomp
@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_jit_dies_under_memory_deny_write_execute() -> None:
    """Why the unit does not support `harperdb restart`: node's JIT is killed under MDWE."""
    node = shutil.which("node")
    assert node is not None
    hot_loop = "let s = 0; for (let i = 0; i < 1e7; i++) s += i; console.log(s)"
    free = subprocess.run(
        [node, "-e", hot_loop], capture_output=True, text=True, timeout=120, check=False
    )
    assert free.returncode == 0, free.stderr
    assert _under_mdwe(node, "-e", hot_loop).returncode != 0


DROP_IN = ROOT / "contrib" / "systemd" / "harper-certd.service.d" / "override.conf"


@needs_analyze
def test_the_drop_in_example_verifies_with_the_unit(tmp_path: Path) -> None:
    """The unit plus contrib's drop-in (ROOTPATH, ReadWritePaths, LoadCredential), loaded the
    way systemd loads drop-ins (the unit's search path), has nothing for verify to report."""
    units = tmp_path / "units"
    units.mkdir()
    copy = _copy_with_existing_exec_start(units)
    (units / "harper-certd.service.d").mkdir()
    shutil.copy(DROP_IN, units / "harper-certd.service.d" / "override.conf")
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:"}
    assert SYSTEMD_ANALYZE is not None
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", str(copy)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    about_us = [
        line for line in (result.stdout + result.stderr).splitlines() if "harper-certd" in line
    ]
    assert (result.returncode, about_us) == (0, [])
    text = DROP_IN.read_text()
    assert "ReadWritePaths=\n" in text
    assert "LoadCredential=harper-ops:" in text


def test_the_drop_in_mistake_is_seen(tmp_path: Path) -> None:
    """Not vacuous: a misspelt key in the drop-in is reported by verify."""
    if SYSTEMD_ANALYZE is None:
        pytest.skip("systemd-analyze is not installed")
    units = tmp_path / "units"
    units.mkdir()
    copy = _copy_with_existing_exec_start(units)
    (units / "harper-certd.service.d").mkdir()
    (units / "harper-certd.service.d" / "override.conf").write_text(
        DROP_IN.read_text().replace("LoadCredential=", "LoadCredentail=")
    )
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:"}
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", str(copy)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "LoadCredentail" in result.stdout + result.stderr
