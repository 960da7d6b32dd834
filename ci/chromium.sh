#!/usr/bin/env bash
# Installs Debian's chromium for tests/test_inspect_browser.py (the inspect page rendered in a
# real headless browser). Those tests skip when chromium is absent. Run as root on Debian 12,
# before `make test`; .ci/run can call it as: bash ci/chromium.sh
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y chromium  # with its recommends: fonts-liberation draws the text
chromium --version
