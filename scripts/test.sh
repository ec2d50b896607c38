#!/usr/bin/env bash
# Set up and run the whole test suite: `bash scripts/test.sh` (what the README and .ci/run call).
# Installs convscope with its test extras into the current Python, then runs pytest.
# pytest exits 5 when it collects no tests; `set -e` makes that (and any failure) fail the run.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check -e ".[test]"
python -m pytest -q "$@"
