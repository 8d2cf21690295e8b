#!/usr/bin/env bash
# The main job on the built-in sample: set up .venv, then run `synctalk demo` end to end.
# Extra args go to `synctalk demo` (e.g. -o OUT_DIR, --device cuda).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
exec "$VENV/bin/synctalk" demo "$@"
