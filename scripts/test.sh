#!/usr/bin/env bash
# Set up and run the whole test suite: `bash scripts/test.sh` (what the README and .ci/run call).
# Installs convscope with its test extras into the current Python, the system Chromium that the
# web app's browser tests drive through Playwright (never `playwright install`), then runs pytest.
# pytest exits 5 when it collects no tests; `set -e` makes that (and any failure) fail the run.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
python -m pip install --quiet --disable-pip-version-check -e ".[test]"
# The browser tests must run here, not skip: a missing Chromium or Playwright is a failure.
export CONVSCOPE_REQUIRE_BROWSER="${CONVSCOPE_REQUIRE_BROWSER:-1}"
python -m pytest -q "$@"
