#!/bin/sh
# The browser tests (tests/console) drive Debian's chromium with Playwright; `playwright install`
# downloads browsers and cannot work here. Install the distribution's package when it is missing.
set -eu
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "chromium is missing: run as root, or: sudo apt-get install -y chromium" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
