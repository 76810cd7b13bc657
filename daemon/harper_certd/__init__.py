"""harper-certd: keeps the TLS certificates of a Harper cluster node valid."""

__version__ = "0.1.0"

import warnings

# Harper's own certificates (the CA and node certificate 4.x makes itself) carry C=USA: three
# letters where X.520 allows two.  OpenSSL and Node load such a name; cryptography warns at
# every read of the subject, which reached `check`, `status`, `install` and the daemon's log
# (certd.library_message) on every node that kept Harper's certificate.  No verdict depends on
# an attribute's length.
warnings.filterwarnings("ignore", message=r"Attribute's length must be", category=UserWarning)
