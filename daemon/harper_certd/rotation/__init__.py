"""One command rotates the cluster's CA (``harper-certd ca rotate NEW_CA.pem``).

The plan lives in Harper itself (database ``harper_certd``, table ``ca_rotation``), so Harper
replicates it to every node; each node's daemon carries out its own steps and records its
phase in its own row.  ``phases`` (the leaf: phase and plan-state names), ``plan`` (the
records and their JSON shape), ``decide`` (the pure decision: ``next_step``), ``table``
(reading and writing the records through the Operations API), ``executor`` (the thin part
the daemon's node loop runs) and ``command`` (the ``ca rotate`` command).  Why eventual
consistency is enough: docs/cluster.md.
"""
