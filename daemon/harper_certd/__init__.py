"""harper-certd: keeps the TLS certificates of a Harper cluster node valid."""

__version__ = "0.1.0"
