"""Harper's side of the node: its process, its Operations API, making it use a set, and
what it serves.  Nothing here knows about peers or the install pipeline (they sit above).

- ``method``: the restart methods (``RestartMethod``), a leaf the configuration reads.
- ``process``: Harper's main PID, the ``harperdb.js`` it runs, its version.
- ``api``: the Operations API (HTTP or Unix socket, basic auth).
- ``probe``: what a TLS port serves, and waiting until every port serves a fingerprint.
- ``apply``: the applier: hot reload, restart, the re-nudge; a before-restart hook.

Facts this rests on (measured on Harper 4.7.29; tests/HARPER-RIG-FINDINGS.md):
- Harper reloads certificate files by itself about 1.5 s after their watched inode
  changes; the swap's nudge provides that change (hot reload, 0 failed handshakes).
- A full restart (Operations API ``restart`` or ``harperdb restart``) loads the set at
  start; about 2.6 s without TLS here.
- ``restart_service http_workers`` restarts workers only: their key comes from the new
  files while the main thread still holds the old certificate, so TLS breaks.  It is
  never used, whatever the Operations API method is asked to do.
- With a mismatched pair at start Harper serves a certificate of its own CA
  (``HarperDB-Certificate-Authority-*``) and reports success; only the fingerprint of
  what is served tells the truth.

This ``__init__`` imports nothing, so that ``config`` can read ``harper.method`` (a leaf)
without loading the rest.
"""
