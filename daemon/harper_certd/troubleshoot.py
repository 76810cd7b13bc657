"""The openssl commands of Harper's troubleshooting guide that show a problem to a person.

Kept apart from ``check`` so that ``validate`` does not import Harper's config reader.
"""

from __future__ import annotations

import os

from harper_certd.load import PKCS12_WORDS
from harper_certd.problems import Problem
from harper_certd.roles import SetPaths

_DER = "is a binary (DER)"  # load.py's sentence for a DER certificate or key


def openssl_commands(problem: Problem, paths: SetPaths) -> list[str]:
    """Commands a person can run to see a problem for themselves (Harper's troubleshooting);
    none for a file that does not exist (the problem's sentence says so; openssl would only
    repeat it)."""
    cert, key, ca = paths.cert, paths.key, paths.ca
    unread = {"cert_unreadable": cert, "key_unreadable": key, "ca_unreadable": ca}
    if problem.code in unread and not os.path.lexists(unread[problem.code] or ""):
        return []
    if problem.code in unread and PKCS12_WORDS in problem.message:
        # the sentence gives the openssl pkcs12 commands that split it; x509 or pkey would
        # only fail on it (a newcomer was sent to `openssl x509 -text` on a .pfx)
        return []
    # A binary (DER) file: the problem's sentence says so and gives the conversion; the
    # command to see it reads it as DER too (without -inform der openssl only fails on it).
    cert_form = (
        "-inform der " if problem.code == "cert_unreadable" and _DER in problem.message else ""
    )
    key_form = (
        "-inform der " if problem.code == "key_unreadable" and _DER in problem.message else ""
    )
    text = f"openssl x509 {cert_form}-in {cert} -noout -text"
    verify = f"openssl verify -CAfile {ca} -untrusted {cert} {cert}"
    by_code = {
        "cert_unreadable": [text],
        # -pubout: the public half, or openssl's reason; never -text, which prints the private key
        "key_unreadable": [f"openssl pkey {key_form}-in {key} -pubout"],
        "ca_unreadable": [f"openssl storeutl -noout -text -certs {ca}"],
        "key_mismatch": [
            f"openssl x509 -in {cert} -noout -pubkey | openssl sha256",
            f"openssl pkey -in {key} -pubout | openssl sha256",
        ],
        "chain_incomplete": [verify, f"openssl storeutl -noout -text -certs {ca}"],
        "chain_invalid": [verify],
        "ca_expired": [verify, f"openssl storeutl -noout -text -certs {ca}"],
        "ca_not_yet_valid": [verify],
        "weak_key": [text],
        "weak_signature": [text],
    }
    return by_code.get(problem.code, [text])
