# Shared by test.sh and demo.sh: create or reuse .venv and install synctalk into it.
# CPU torch is installed first, pinned, so no CUDA wheels are pulled on machines without a GPU.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SYNCTALK_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), "synctalk needs Python >= 3.11"'

# Reinstall only when the dependency list changed (stamp = hash of pyproject.toml + extras).
EXTRAS="${1:-}"
STAMP="$VENV/.synctalk-install"
WANT="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)-$EXTRAS"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "[setup] installing synctalk${EXTRAS:+[$EXTRAS]} into $VENV (first time takes a few minutes)"
  "$PY" -m pip install --quiet --disable-pip-version-check --upgrade pip
  if ! "$PY" -c 'import torch' 2>/dev/null; then
    # A CUDA machine may set SYNCTALK_TORCH_INDEX to a CUDA wheel index; the default is whatever pip
    # resolves for the exact pin, which on CPU-only machines here is the local CPU wheel.
    "$PY" -m pip install --quiet --disable-pip-version-check torch==2.13.0 \
      ${SYNCTALK_TORCH_INDEX:+--index-url "$SYNCTALK_TORCH_INDEX"}
  fi
  "$PY" -m pip install --quiet --disable-pip-version-check -e "$ROOT${EXTRAS:+[$EXTRAS]}"
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
