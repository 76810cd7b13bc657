"""The phases of a cluster CA rotation and the states of a plan (no imports: a leaf).

A node's phase only moves forward, in this order:

- ``planned`` (0): the plan is known, nothing done yet on this node;
- ``ca-added`` (1): the new CA is in this node's CA file (after the CA of the live leaf, which
  stays first: ``ca_file_issuer_not_first``), and Harper holds it as an authority record;
- ``leaf-switched`` (2): this node's live leaf is issued by the new CA; its CA file starts
  with the new CA and still holds the old ones (peers may still serve old-CA leaves);
- ``old-removed`` (3): the old CAs are gone from the CA file and from Harper's authority
  records, and the CAs the nodes keep for each other were exchanged again;
- ``restarted`` (4): Harper was restarted (one node at a time, in the order of the plan's
  node names) and is connected to every peer again.  Needed because a running Harper 4.7.29
  still accepts a leaf of a removed CA on a fresh replication connection after its file
  entry and its authority record are gone (measured, tests/test_ca_rotation.py); it forgets
  the CA only on restart.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class Phase(IntEnum):
    PLANNED = 0
    CA_ADDED = 1
    LEAF_SWITCHED = 2
    OLD_REMOVED = 3
    RESTARTED = 4

    @property
    def label(self) -> str:
        """The name shown and stored: ``planned``, ``ca-added``, ``leaf-switched``,
        ``old-removed``."""
        return self.name.lower().replace("_", "-")


class State(StrEnum):
    """What the operator set on the plan (``ca rotate --pause/--resume/--abort``)."""

    ACTIVE = "active"
    PAUSED = "paused"
    ABORTED = "aborted"
