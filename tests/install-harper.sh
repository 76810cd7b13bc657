#!/usr/bin/env bash
# Install HarperDB 4.7.29 from npm into a cache directory for the integration tests.
#
# Idempotent: nothing is downloaded when the cache already holds harperdb 4.7.29.
# The cache directory is
#   ${HARPER_CERTD_HARPER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/harper-certd/harperdb-4.7.29}
# (tests/harper_rig.py::find_harper() uses the same rule).
# The last line of output is the path of the harperdb.js entry point.
set -euo pipefail

readonly HARPER_VERSION="4.7.29"
readonly MIN_NODE_MAJOR=20

dir="${HARPER_CERTD_HARPER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/harper-certd/harperdb-${HARPER_VERSION}}"

die() {
    echo "install-harper.sh: error: $*" >&2
    exit 1
}

# Without a usable Node.js the Harper tests skip (with the reason); in CI that is an error.
no_node() {
    if [[ -n "${CI:-}" ]]; then
        die "$*"
    fi
    echo "install-harper.sh: warning: $*; the tests that run a real Harper will be skipped" >&2
    exit 0
}

command -v node >/dev/null 2>&1 || no_node "node is not on PATH; Harper ${HARPER_VERSION} needs Node.js >= ${MIN_NODE_MAJOR}"
command -v npm >/dev/null 2>&1 || no_node "npm is not on PATH; it is needed to install harperdb@${HARPER_VERSION}"

node_version="$(node --version)"          # e.g. v20.20.2
node_major="${node_version#v}"
node_major="${node_major%%.*}"
if ! [[ "$node_major" =~ ^[0-9]+$ ]]; then
    die "cannot parse the Node.js version '${node_version}'"
fi
if (( node_major < MIN_NODE_MAJOR )); then
    no_node "Node.js ${node_version} is too old: Harper ${HARPER_VERSION} needs Node.js >= ${MIN_NODE_MAJOR}"
fi

pkg_json="${dir}/node_modules/harperdb/package.json"
entry="${dir}/node_modules/harperdb/bin/harperdb.js"

installed_version() {
    # Prints the version recorded in harperdb's package.json, or nothing.
    [[ -f "$pkg_json" ]] || return 0
    node -e 'process.stdout.write(String(require(process.argv[1]).version || ""))' "$pkg_json" 2>/dev/null || true
}

if [[ "$(installed_version)" == "$HARPER_VERSION" && -f "$entry" ]]; then
    echo "harperdb ${HARPER_VERSION} already installed in ${dir}" >&2
else
    echo "installing harperdb@${HARPER_VERSION} into ${dir}" >&2
    mkdir -p "$dir"
    if [[ ! -f "${dir}/package.json" ]]; then
        # A private package.json keeps npm from walking up to an unrelated project.
        printf '{\n  "name": "harper-certd-test-harper",\n  "private": true\n}\n' >"${dir}/package.json"
    fi
    (
        cd "$dir"
        npm install --no-audit --no-fund --ignore-scripts "harperdb@${HARPER_VERSION}" >&2
    )
    got="$(installed_version)"
    [[ "$got" == "$HARPER_VERSION" ]] || die "npm finished but ${pkg_json} reports version '${got}', expected ${HARPER_VERSION}"
    [[ -f "$entry" ]] || die "npm finished but ${entry} is missing"
fi

echo "$entry"
