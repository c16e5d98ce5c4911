#!/bin/sh
# Make sure Debian's bubblewrap (`bwrap`) is present: every job and upload validation runs
# inside it (worker/sandbox.py). Idempotent. Without it, and without namespaces, jobs refuse
# to start unless the operator opts out with STILLHOUSE_SANDBOX=none (see README.md).
set -u

if command -v bwrap >/dev/null 2>&1; then
    echo "ensure-sandbox: $(command -v bwrap) already installed ($(bwrap --version 2>/dev/null))"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-sandbox: no apt-get here; install bubblewrap with your package manager"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "ensure-sandbox: not root and no passwordless sudo; install bubblewrap (apt-get install bubblewrap)"
        exit 0
    fi
fi

echo "ensure-sandbox: installing bubblewrap with apt-get"
if $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends bubblewrap \
    || { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update \
        && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends bubblewrap; }; then
    echo "ensure-sandbox: installed $(bwrap --version 2>/dev/null || echo bubblewrap)"
else
    echo "ensure-sandbox: apt-get could not install bubblewrap; jobs will refuse to start"
fi
exit 0
