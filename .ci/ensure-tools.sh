#!/bin/sh
# Install the command-line tools that the test suite drives from Debian's packages when they
# are missing: wrk (bench/api_load.py's load generator) and curl (its upload client).
# Idempotent. Unlike Chromium there is no skip: a missing tool fails its test loudly.
set -u

missing=""
for pair in wrk:wrk curl:curl; do
    cmd=${pair%%:*}
    pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || missing="$missing $pkg"
done

if [ -z "$missing" ]; then
    echo "ensure-tools: wrk and curl already installed"
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
