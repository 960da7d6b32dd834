#!/usr/bin/env bash
# Installs Debian's chromium and chromium-driver for the browser tests: tests/test_inspect_browser.py
# (the inspect page rendered in headless chromium) and tests/test_serve_browser.py (the
# `rnnlab serve` pages driven through Selenium). Under CI=true the serve browser tests fail when
# either is missing. Run as root on Debian 12, before `make test`; .ci/run calls it.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y chromium chromium-driver  # with its recommends: fonts-liberation draws the text
chromium --version
chromedriver --version
