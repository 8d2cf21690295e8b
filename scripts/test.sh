#!/usr/bin/env bash
# The test command: set up .venv (CPU torch) and run the whole test suite. Extra args go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh" dev
cd "$ROOT"
# Real clips and the Face Landmarker bundle live beside the repo; tests skip with a reason when absent.
export SYNCTALK_TEST_DATA="${SYNCTALK_TEST_DATA:-$ROOT/../shared/data}"
export SYNCTALK_MODELS="${SYNCTALK_MODELS:-$SYNCTALK_TEST_DATA/models}"
export SYNCTALK_OFFLINE="${SYNCTALK_OFFLINE:-1}"
exec "$PY" -m pytest "$@"
