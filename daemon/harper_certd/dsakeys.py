"""cryptography's DSA key types, named without its deprecation warning.

cryptography 51 deprecates DSA and warns on every access to ``dsa.DSAPublicKey`` and
``dsa.DSAPrivateKey`` (``CryptographyDeprecationWarning``, printed on stderr by every
process that imports the validator).  harper-certd names the types only to recognise a DSA
key and refuse it (``weak_key``: Node's TLS 1.3 cannot sign with one), so it takes them
here once, with that one warning silenced; older releases warn nothing.  A leaf module: it
imports nothing of ours.
"""

from __future__ import annotations

import warnings

from cryptography.hazmat.primitives.asymmetric import dsa
from cryptography.utils import CryptographyDeprecationWarning

with warnings.catch_warnings():
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    DSAPublicKey = dsa.DSAPublicKey
    DSAPrivateKey = dsa.DSAPrivateKey

__all__ = ["DSAPrivateKey", "DSAPublicKey"]
