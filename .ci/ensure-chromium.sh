#!/bin/sh
# Make sure Debian's headless-capable Chromium is present for the docs browser test
# (tests/api/test_docs.py). Idempotent; never fails the build: without Chromium that test
# skips with a reason.
set -u

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

if [ -x "$CHROMIUM" ]; then
    echo "ensure-chromium: $CHROMIUM already installed ($("$CHROMIUM" --version 2>/dev/null || echo 'version unknown'))"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: no apt-get here; not installing Chromium (the browser test will skip)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "ensure-chromium: not root and no passwordless sudo; not installing Chromium (the browser test will skip)"
        exit 0
    fi
fi

echo "ensure-chromium: installing chromium with apt-get"
if $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update \
    && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; then
    echo "ensure-chromium: installed $("$CHROMIUM" --version 2>/dev/null || echo chromium)"
else
    echo "ensure-chromium: apt-get could not install chromium; the browser test will skip"
fi
exit 0
