"""A lane: one certificate set (``lane``), its states (``state``, a leaf), its live files
(``live``) and its renewal (``renewal``)."""
