"""Runbooks that cannot lie (issue 22).

1. Every ``harper-certd`` command and option named in a code span or block of ``docs/`` exists
   in the argument parser (``harper_certd.cli.build_parser``).
2. The ``harper-certd`` lines of each runbook's ``sh`` blocks run, in the order of the site's
   nav and of each page, on one real Harper 4.7.29 node, with the page's placeholders
   (``/path/to/new-set``, ``node1.example.com``, ``/path/to/new-ca.pem``) bound to real files;
   each exits as the page says. Read-only lines of ``openssl``, ``ls`` and ``sysctl`` run too
   (openssl's fingerprint compared with what the port serves); lines that need the host's
   journald, systemd or root (``journalctl``, ``systemctl``, ``timedatectl``, ``sudo tee``)
   are the operator's and not run here. The CA-rotation runbook has
   its own test (tests/test_ca_rotation.py of issue 18) and is left out.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
import yaml

from harper_certd.cli import build_parser
from harper_rig import (
    HarperNode,
    RigCA,
    fingerprint_pem,
    iter_rig_processes,
    needs_harper,
    probe_fingerprint,
)

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NODE = "noderb.cluster.test"
NODE_IP = "127.0.0.6"
NOT_RUN_HERE = ("ca-rotation.md",)
F = TypeVar("F", bound=Callable[..., object])


# ------------------------------------------------------------------ commands named in docs/


def _code_texts(text: str) -> Iterator[str]:
    """Each line of a fenced block, then each inline code span outside the blocks."""
    fenced = re.compile(r"^\s*```[^\n]*\n(.*?)^\s*```", re.DOTALL | re.MULTILINE)
    for block in fenced.findall(text):
        yield from block.splitlines()
    yield from re.findall(r"`([^`\n]+)`", fenced.sub("", text))


def _invocations(line: str) -> Iterator[list[str]]:
    """The words after each ``harper-certd`` of a line, up to the end of that command."""
    for match in re.finditer(r"(?:^|[\s\"'(])harper-certd\s+([a-z][^;&#|]*)", line):
        yield match.group(1).replace("\\|", " ").split()


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _named() -> list[tuple[str, list[str]]]:
    return [
        (str(page.relative_to(ROOT)), words)
        for page in sorted(DOCS.rglob("*.md"))
        for line in _code_texts(page.read_text())
        for words in _invocations(line)
    ]


def test_every_command_and_option_named_in_docs_exists() -> None:
    """Subcommands (``ca add``) and ``--options`` as the parser knows them."""
    root = build_parser()
    named = _named()
    assert len(named) > 80  # the pages do name commands: the extraction works
    wrong = []
    for page, words in named:
        parser, path = root, ["harper-certd"]
        for word in words:
            subs = _subparsers(parser)
            if not subs or not re.fullmatch(r"[a-z]+", word):
                break
            if word not in subs:
                wrong.append((page, " ".join([*path, word]), "no such command"))
                break
            parser, path = subs[word], [*path, word]
        options = {o for a in parser._actions for o in a.option_strings}
        for word in words:
            option = re.match(r"--[a-z][a-z-]*", word)
            if option and option.group(0) not in options:
                wrong.append((page, " ".join(path), option.group(0)))
    assert wrong == []


# ------------------------------------------------------------------ runbooks on real Harper


def _runbook_pages() -> list[Path]:
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    section = next(i["Runbooks"] for i in nav if isinstance(i, dict) and "Runbooks" in i)
    pages = [p if isinstance(p, str) else next(iter(p.values())) for p in section]
    return [
        DOCS / p for p in pages if p != "runbooks/index.md" and Path(p).name not in NOT_RUN_HERE
    ]


# Lines of other tools that read the node without needing the host's services (journald,
# systemd, sysctl): run here too, through bash since the page gives a pipeline.
READ_ONLY_TOOLS = ("openssl", "ls", "sysctl")


def runbook_steps(page: Path) -> list[tuple[str, list[str], str]]:
    """(kind, argv, line) for each line of the page's sh blocks that the test runs, in page
    order: ``certd`` for harper-certd (argv without the program), ``tool`` for a line of
    READ_ONLY_TOOLS."""
    steps = []
    for block in re.findall(r"```sh\n(.*?)```", page.read_text(), re.DOTALL):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            while words[:1] == ["sudo"] or words[:2] == ["-u", "harperdb"]:
                words = words[2:] if words[0] == "-u" else words[1:]
            if words[:1] == ["harper-certd"]:
                steps.append(("certd", words[1:], line))
            elif words[:1] and words[0] in READ_ONLY_TOOLS:
                steps.append(("tool", words, line.split(" #", 1)[0]))
    return steps


def runbook_commands(page: Path) -> list[list[str]]:
    """argv of each ``harper-certd`` line of the page's sh blocks, in page order."""
    return [argv for kind, argv, _ in runbook_steps(page) if kind == "certd"]


@dataclass
class Rig:
    node: HarperNode
    ca: RigCA
    base: Path
    env: dict[str, str]
    ran: list[tuple[str, list[str], int]] = field(default_factory=list)

    def new_set(self, ca_pem: bytes | None = None) -> Path:
        """A fresh valid replication set folder in Harper's names."""
        leaf = self.ca.issue(NODE, dns_names=(NODE,), ip_addresses=[NODE_IP])
        folder = Path(tempfile.mkdtemp(prefix="set.", dir=self.base))
        folder.chmod(0o755)
        (folder / "certificate.pem").write_bytes(leaf.cert_pem)
        key = folder / "privateKey.pem"
        key.touch(mode=0o600)
        key.write_bytes(leaf.key_pem)
        (folder / "ca.pem").write_bytes(ca_pem or self.ca.cert_pem)
        return folder

    def cli(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "harper_certd", *argv],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=180,
        )


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    # A short base with a dot, as the walkthrough's (Harper's rootPath regex backtracks).
    base = Path(tempfile.mkdtemp(prefix="hr.", dir="/tmp"))
    node = HarperNode(
        base,
        NODE,
        NODE_IP,
        operations_secure=True,
        pristine_cache=tmp_path_factory.getbasetemp() / "harper-pristine-runbooks",
    )
    ca = RigCA("harper-certd runbooks CA")
    etc = base / "etc"
    etc.mkdir()
    credentials = etc / "ops-credentials"
    credentials.touch(mode=0o600)
    credentials.write_text(f"admin:{node.password}\n")
    config = {
        "harper": {"root": str(node.root)},
        "state_dir": str(base / "state"),
        "operations_api": {"credentials_file": str(credentials)},
        "verify": {"timeout": 30, "interval": 0.1},
    }
    (etc / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "HARPER_CERTD_CONFIG": str(etc / "config.yaml")}
    for name in ("ROOTPATH", "INVOCATION_ID", "NOTIFY_SOCKET"):
        env.pop(name, None)
    rig = Rig(node, ca, base, env)
    try:
        node.install()
        first = ca.issue(NODE, dns_names=(NODE,), ip_addresses=[NODE_IP])
        node.write_tls_files(first.cert_pem, first.key_pem, ca.cert_pem)
        node.start(expect_fingerprint=first.fingerprint)
        yield rig
    finally:
        node.stop()
        leftovers = list(iter_rig_processes(base))
        if not leftovers:
            shutil.rmtree(base, ignore_errors=True)
        assert not leftovers, f"Harper processes left behind: {leftovers}"


def _expected(argv: list[str]) -> set[int]:
    """The exit status each runbook line promises in the situation the test sets up."""
    command = argv[0]
    if command in ("status", "cluster"):
        return {0, 1}  # 1: a warning (the refused set of its page) / no peer to read
    return {0}


def _marked(marks: list[pytest.MarkDecorator]) -> Callable[[F], F]:
    def apply(func: F) -> F:
        for mark in marks:
            func = mark(func)
        return func

    return apply


def _run_tool_line(rig: Rig, line: str, binding: dict[str, str]) -> None:
    """A read-only line of another tool, bound to the rig: exit 0; openssl's fingerprint is
    what the replication port serves."""
    port = rig.node.ports.replication
    text = line.replace("127.0.0.1:9933", f"{NODE_IP}:{port}").replace("<root>", str(rig.node.root))
    for placeholder, value in binding.items():
        text = text.replace(placeholder, value)
    done = subprocess.run(
        ["bash", "-c", text], capture_output=True, text=True, check=False, timeout=60
    )
    rig.ran.append(("tool", [text], done.returncode))
    assert done.returncode == 0, (text, done.stdout, done.stderr)
    if "-fingerprint" in text:
        shown = done.stdout.strip().split("=", 1)[1].replace(":", "").lower()
        assert shown == probe_fingerprint(NODE_IP, port, server_name=NODE)


@pytest.mark.parametrize("page", _runbook_pages(), ids=lambda p: p.name)
@_marked(needs_harper(timeout=600))
def test_runbook_runs_on_real_harper(rig: Rig, page: Path) -> None:
    """The page's harper-certd lines, in order, each exiting as the page says."""
    commands = runbook_commands(page)
    assert commands, f"{page.name} has no harper-certd command to run"
    new_set = rig.new_set()
    leaf = fingerprint_pem((new_set / "certificate.pem").read_bytes())
    refused = None
    if page.name == "set-refused-or-held.md":
        # The situation of the page: a refused set (a leaf for another name).
        bad = rig.new_set()
        other = rig.ca.issue("other.cluster.test", dns_names=("other.cluster.test",))
        (bad / "certificate.pem").write_bytes(other.cert_pem)
        (bad / "privateKey.pem").write_bytes(other.key_pem)
        refused = rig.cli(["install", str(bad)])
        assert refused.returncode == 1, refused.stdout + refused.stderr
    new_ca = RigCA("harper-certd runbooks next CA")
    ca_file = rig.base / f"new-ca-{page.stem}.pem"
    ca_file.write_bytes(new_ca.cert_pem)
    binding = {
        "/path/to/new-set": str(new_set),
        "node1.example.com": NODE,
        "/path/to/new-ca.pem": str(ca_file),
    }
    before = probe_fingerprint(NODE_IP, rig.node.ports.replication, server_name=NODE)
    installed = False
    for kind, argv, line in runbook_steps(page):
        if kind == "tool":
            _run_tool_line(rig, line, binding)
            continue
        bound = [binding.get(w, w) for w in argv]
        for placeholder, value in binding.items():
            bound = [w.replace(placeholder + "/", value + "/") for w in bound]
        done = rig.cli(bound)
        rig.ran.append((page.name, bound, done.returncode))
        assert done.returncode in _expected(bound), (page.name, bound, done.stdout, done.stderr)
        if refused is not None and bound[0] == "status":
            # The page's situation shows: a warning naming the refusal until a set is installed.
            assert done.returncode == (0 if installed else 1), (bound, done.stdout)
        if bound[:2] == ["status", "--json"] and refused is not None and not installed:
            status = json.loads(done.stdout)
            assert "refused" in [f["code"] for f in status["findings"]]
            assert status["refusals"], "the refused set is what the page reads"
        served = probe_fingerprint(NODE_IP, rig.node.ports.replication, server_name=NODE)
        if bound[0] == "install" and "--dry-run" not in bound:
            # Installed means served: the node's replication port hands out the new leaf.
            installed = True
            assert served == leaf, (page.name, bound)
        elif bound[0] == "rollback":
            # The generation the live one replaced: what was served before this page's install.
            assert served == before != leaf, (page.name, bound)
