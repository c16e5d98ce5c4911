#!/bin/sh
# Install the command-line tools that the test suite drives from Debian's packages when they
# are missing: wrk (bench/api_load.py's load generator), curl (its upload client), and
# bubblewrap with setpriv (util-linux): the sandbox every job and upload validation runs in
# (worker/bwrap.py). Idempotent. Unlike Chromium there is no skip: a missing tool fails its
# test loudly (without bwrap, jobs and validation refuse to run: sandbox_unavailable).
# `ensure-tools.sh sandbox` (make run) installs only the sandbox's tools.
set -u

tools="wrk:wrk curl:curl bwrap:bubblewrap setpriv:util-linux"
if [ "${1:-}" = "sandbox" ]; then
    tools="bwrap:bubblewrap setpriv:util-linux"
fi

missing=""
for pair in $tools; do
    cmd=${pair%%:*}
    pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || missing="$missing $pkg"
done

if [ -z "$missing" ]; then
    echo "ensure-tools: already installed:$(for pair in $tools; do printf ' %s' "${pair%%:*}"; done)"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-tools: missing:$missing and no apt-get here; install them by hand" >&2
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "ensure-tools: missing:$missing; not root and no passwordless sudo" >&2
        exit 0
    fi
fi

echo "ensure-tools: installing$missing with apt-get"
# apt-get update only when the package lists have never been fetched or the install fails
# on stale lists: a fresh machine has none, and `update` costs ~10 s.
if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing; then
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update \
        && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing \
        || echo "ensure-tools: apt-get could not install$missing" >&2
fi
exit 0
