#!/bin/sh
# certbot deploy hook: hand each renewed lineage to harper-certd.
#   sudo install -m 0755 contrib/certbot/deploy-hook.sh \
#        /etc/letsencrypt/renewal-hooks/deploy/harper-certd.sh
# certbot runs it as root after every successful renewal with RENEWED_LINEAGE set to
# /etc/letsencrypt/live/<name>. `harper-certd stage` copies the set (never moves certbot's
# files) into the daemon's incoming folder, owned by the daemon's user, and waits for the
# outcome: exit 0 installed, 1 refused, 3 rolled back, 4 no outcome in time. The
# configuration comes from $HARPER_CERTD_CONFIG or /etc/harper-certd/config.yaml.
set -eu
: "${RENEWED_LINEAGE:?certbot sets RENEWED_LINEAGE for deploy hooks}"
HARPER_CERTD="${HARPER_CERTD:-/opt/harper-certd/bin/harper-certd}"
exec "$HARPER_CERTD" stage "$RENEWED_LINEAGE" --wait --timeout 300
