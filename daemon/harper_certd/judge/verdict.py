"""Node's verdict over the model's: who judged, and the problems the two give together.

Node's answer is authoritative for "would Harper's runtime accept these files"; the model
(``harper_certd.validate``) supplies the codes, sentences and fixes.  ``reconcile``:

- both accept, or both refuse: the model's problems stand (Node's reason goes in the
  judge line's details);
- Node refuses and the model found no error: ``node_refused``, carrying Node's OpenSSL
  reason; a disagreement (``node_refused``), logged as ``certd.judge_disagreed``;
- the model refuses and Node accepts: a refusal with a code of ``POLICY`` (refused on
  purpose although Node accepts) or ``HARPER_RULES`` (Harper's own rules, which a bare TLS
  handshake cannot see) stands; any other is a fault of the model: it becomes the warning
  ``model_disagrees`` (Node decides) and a disagreement (``model_refused``), logged.

docs/judge.md lists the same tables with the sentence that makes each deliberate; a test
holds the two together.
"""

from collections.abc import Sequence
from typing import NamedTuple

from harper_certd.problems import Problem, Severity, problem

MODEL_NAME = "harper-certd's model of Node 20"

# Refused although Node accepts, on purpose: code -> why (docs/judge.md, "Policy").
POLICY: dict[str, str] = {
    "leaf_is_ca": "a node certificate that is a CA could issue certificates every peer trusts",
    "weak_key": "RSA under 2048 bits, EC under 256 bits and DSA keys are breakable or unusable "
    "in TLS 1.3",
    "weak_signature": "SHA-1 and MD5 signatures can be forged",
    "eku_any": "anyExtendedKeyUsage lets the node's key act for any purpose",
    "hostname_partial_wildcard": "a partial wildcard label (ba*.example.com) matches names "
    "nobody meant; RFC 6125 6.4.3 and the CA/Browser Forum forbid it",
    "name_constraint_wildcard": "a wildcard name that covers a name the CA excludes escapes "
    "the constraint OpenSSL checks as written (CVE-2025-61727's kind)",
    "check_failed": "a set the analysis could not finish is never installed unexplained",
    "ca_file_damaged_entry": "Node silently drops a damaged CA-file entry and every entry "
    "after it; a set whose CA file loses entries is refused, naming the entry",
    "ca_unreadable": "a CA file Node reads only in part (a damaged entry) or through OpenSSL's "
    "lenient DER parser is refused, naming the entry",
    "cert_unreadable": "a certificate file holding a certificate only OpenSSL's lenient DER "
    "parser reads (a bad time value) would be sent to peers damaged",
    "chain_invalid": "a name constraint of a form the model does not evaluate (directoryName, "
    "email, URI) on a chain cryptography's verifier does not judge is refused, never accepted "
    "unchecked",
}

# Harper's own rules, which a bare TLS handshake cannot see: code -> the rule.
HARPER_RULES: dict[str, str] = {
    "ca_file_issuer_not_first": "Harper names a CA record after the CA file's first certificate "
    "and hands joining peers the one named like the leaf's issuer",
    "node_name_not_verbatim": "Harper looks its replication certificate up by the node name "
    "exactly as written",
    "url_host_mismatch": "peers dial replication.url's host and check the certificate against it",
    "eku_missing": "replication needs both TLS Web Server and TLS Web Client Authentication",
    "replication_server_only": "replication needs both EKUs",
}


class JudgeInfo(NamedTuple):
    """Who judged a set.  ``kind``: ``node`` or ``model``; ``version``: "Node v20.20.2,
    OpenSSL 3.0.19" or the model's name; ``why``: why the model judged alone;
    ``node_reason``: Node's refusal (empty when it accepted or did not judge);
    ``disagreement``: ``""``, ``node_refused`` or ``model_refused``."""

    kind: str
    version: str
    node_path: str = ""
    source: str = ""
    why: str = ""
    node_accepts: bool | None = None
    node_reason: str = ""
    disagreement: str = ""

    def line(self) -> str:
        """``judged by Node v20.20.2, OpenSSL 3.0.19 (/usr/bin/node, from PATH)``."""
        if self.kind == "node":
            return f"judged by {self.version} ({self.node_path}, {self.source})"
        return f"judged by {self.version}" + (f" ({self.why})" if self.why else "")

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "version": self.version,
            "line": self.line(),
            "node": self.node_path or None,
            "source": self.source or None,
            "why_model": self.why or None,
            "node_accepts": self.node_accepts,
            "node_reason": self.node_reason or None,
            "disagreement": self.disagreement or None,
        }


def model_info(why: str) -> JudgeInfo:
    return JudgeInfo("model", MODEL_NAME, why=why)


# Codes that are policy only with these words (the sentences load.py writes for the two
# deliberate kinds); the same codes for any other cause are the model's to answer for.
POLICY_WORDS: dict[str, tuple[str, ...]] = {
    "ca_unreadable": ("silently drops", "harper-certd can read"),
    "cert_unreadable": ("harper-certd can read",),
    # validate.rfc5280.name_constraints_unchecked's sentence (x509-limbo
    # rfc5280::nc::nc-permits-invalid-email-san: Node accepts an email constraint's SAN)
    "chain_invalid": ("own walk does not evaluate",),
}


def deliberate(p: Problem) -> bool:
    """Whether a refusal Node does not make is documented (policy or Harper's rule)."""
    if p.code in POLICY_WORDS:
        return any(words in p.message for words in POLICY_WORDS[p.code])
    return p.code in POLICY or p.code in HARPER_RULES


def reconcile(
    problems: Sequence[Problem], accepted: bool, reason: str, version: str
) -> tuple[tuple[Problem, ...], str]:
    """(problems, disagreement) once Node said ``accepted`` (``reason``: why not)."""
    errors = [p for p in problems if p.severity is Severity.ERROR]
    if not accepted:
        if errors:
            return tuple(problems), ""
        refused = problem(
            "node_refused",
            f"{version} refuses this set: {reason}. harper-certd's analysis found no cause of "
            "its own; Harper would refuse these files the same way. Please report it with the "
            "certificates (never the key).",
        )
        return (refused, *problems), "node_refused"
    out: list[Problem] = []
    disagreement = ""
    for p in problems:
        if p.severity is not Severity.ERROR or deliberate(p):
            out.append(p)
            continue
        disagreement = "model_refused"
        out.append(
            problem(
                "model_disagrees",
                f"harper-certd's model refuses this set ({p.code}: {p.message}) but {version} "
                "accepts it, and Node decides; this is a fault of the model: please report it.",
            )
        )
    out.sort(key=lambda p: p.severity is not Severity.ERROR)
    return tuple(out), disagreement
