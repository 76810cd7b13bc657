"""The node: one loop for every certificate set of this Harper node (``loop``), and the
router of ``incoming/`` on a node with several sets (``router``)."""
