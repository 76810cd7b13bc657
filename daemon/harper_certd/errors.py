"""Infrastructure failures.  Problems with certificates are data (``problems``), not these."""

from __future__ import annotations


class CertdError(Exception):
    """Base of harper-certd's own exceptions; ``str()`` is a sentence for an operator."""


class ConfigError(CertdError):
    """A configuration file (ours or Harper's) is missing, unreadable or wrong."""


class SwapError(CertdError):
    """Putting a set in place failed; the live set is as it was."""


class StateError(CertdError):
    """The state directory (journal, generations) is unusable."""


class HarperError(CertdError):
    """Harper could not be restarted, reached or verified."""


class HarperNoAnswer(HarperError):
    """An Operations API request was sent, but the connection closed (or timed out) before
    Harper answered: whether the operation was carried out is not known.  A ``restart``
    does this when Harper's workers go down before the reply is flushed (seen on 4.3.0
    under load): what is served afterwards tells."""


class Interrupted(CertdError):
    """The daemon was asked to stop while waiting on Harper; the journal finishes it later."""
