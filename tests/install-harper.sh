#!/usr/bin/env bash
# Install HarperDB from npm into cache directories for the integration tests: the default
# line 4.7.29 and the older lines the line tests run on (4.4.18, 4.3.0, 4.0.7), side by side.
#
# Idempotent: nothing is downloaded when a cache already holds its version.
# The cache directory of version X is
#   ${XDG_CACHE_HOME:-$HOME/.cache}/harper-certd/harperdb-X
# and for 4.7.29 ${HARPER_CERTD_HARPER_DIR} when set
# (tests/harper_rig.py::find_harper() uses the same rule).
# HARPER_CERTD_LINES="" installs the default line only.
# The last line of output is the path of 4.7.29's harperdb.js entry point.
set -euo pipefail

readonly HARPER_VERSION="4.7.29"
readonly LINES="${HARPER_CERTD_LINES-4.4.18 4.3.0 4.0.7}"
readonly MIN_NODE_MAJOR=20

cache="${XDG_CACHE_HOME:-$HOME/.cache}/harper-certd"

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

installed_version() {
    # Prints the version recorded in $1's harperdb package.json, or nothing.
    local pkg_json="$1/node_modules/harperdb/package.json"
    [[ -f "$pkg_json" ]] || return 0
    node -e 'process.stdout.write(String(require(process.argv[1]).version || ""))' "$pkg_json" 2>/dev/null || true
}

# install_one VERSION DIR: npm-installs harperdb@VERSION into DIR unless it is there.
install_one() {
    local version="$1" dir="$2"
    local entry="${dir}/node_modules/harperdb/bin/harperdb.js"
    if [[ "$(installed_version "$dir")" == "$version" && -f "$entry" ]]; then
        echo "harperdb ${version} already installed in ${dir}" >&2
        return 0
    fi
    echo "installing harperdb@${version} into ${dir}" >&2
    mkdir -p "$dir"
    if [[ ! -f "${dir}/package.json" ]]; then
        # A private package.json keeps npm from walking up to an unrelated project.
        printf '{\n  "name": "harper-certd-test-harper",\n  "private": true\n}\n' >"${dir}/package.json"
    fi
    (
        cd "$dir"
        npm install --no-audit --no-fund --ignore-scripts "harperdb@${version}" >&2
    )
    local got
    got="$(installed_version "$dir")"
    [[ "$got" == "$version" ]] || die "npm finished but ${dir} reports version '${got}', expected ${version}"
    [[ -f "$entry" ]] || die "npm finished but ${entry} is missing"
}

for version in $LINES; do
    [[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "not a version: '${version}'"
    install_one "$version" "${cache}/harperdb-${version}"
done

# The default line last, so that the last line of output stays its entry point.
dir="${HARPER_CERTD_HARPER_DIR:-${cache}/harperdb-${HARPER_VERSION}}"
install_one "$HARPER_VERSION" "$dir"
echo "${dir}/node_modules/harperdb/bin/harperdb.js"
