#!/usr/bin/env bash
# The GPU check: one command for a short loan of a GPU machine (builds cuda_ext, runs the CUDA tests and the
# smoke test, the benchmarks and a 3-minute training of a real clip, writes report.md / report.json).
# All options go to scripts/gpu_check.py (--help lists them; --dry-run prints the plan without a GPU).
#
# The environment: $SYNCTALK_PYTHON when set (a Python that already has CUDA torch and synctalk's dependencies),
# else $SYNCTALK_VENV (default .venv). A venv that is missing, or lacks torch, is made here with PyPI's build of
# the torch version pinned in pyproject.toml, which on Linux x86_64 is the CUDA build. Local CPU wheel sources
# (pip's config files, $PIP_FIND_LINKS, extra indexes, $SYNCTALK_TORCH_INDEX of scripts/_env.sh) are NOT used
# for that install: they would give the +cpu wheel. $SYNCTALK_CUDA_TORCH_INDEX picks another CUDA wheel index
# (a CPU index there is refused).
# The rest (synctalk with its dev and gpu extras) is installed by scripts/_env.sh. An offline machine without a
# ready environment stops here with exit 3 and says what to do.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SYNCTALK_VENV:-$ROOT/.venv}"
CHECK="$ROOT/scripts/gpu_check.py"

plan_only=0
for arg in "$@"; do
  case "$arg" in --dry-run|-h|--help) plan_only=1 ;; esac
done

say() { echo "[gpu_check.sh] $*" >&2; }

# A plan needs no torch and no environment: any Python >= 3.11 prints it.
if [ "$plan_only" = 1 ]; then
  for py in "${SYNCTALK_PYTHON:-}" "$VENV/bin/python" python3; do
    if [ -n "$py" ] && command -v "$py" >/dev/null 2>&1 \
        && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      exec "$py" "$CHECK" "$@"
    fi
  done
  say "no Python >= 3.11 found"; exit 3
fi

if [ -n "${SYNCTALK_PYTHON:-}" ]; then
  exec "$SYNCTALK_PYTHON" "$CHECK" "$@"
fi

ready() {  # torch, synctalk, pytest and ninja (cpp_extension builds need it) importable / on PATH
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - <<'EOF' 2>/dev/null
import importlib.util, os, shutil, sys
import torch, synctalk, pytest  # noqa: F401
bin_dir = os.path.dirname(sys.executable)
sys.exit(0 if shutil.which("ninja") or os.path.exists(os.path.join(bin_dir, "ninja"))
         or importlib.util.find_spec("ninja") else 1)
EOF
}

offline_help() {
  cat >&2 <<EOF
[gpu_check.sh] cannot set up the environment: $1
  This machine cannot reach the package index${2:+ ($2)}, so the CUDA build of torch==$TORCH_PIN and synctalk's
  dependencies cannot be installed here. Either
    - run it where PyPI is reachable (the first run installs into $VENV), or
    - make the environment beforehand and point SYNCTALK_VENV at it (a venv with CUDA torch, then
      'pip install -e "$ROOT[dev,gpu]"'), or
    - set SYNCTALK_PYTHON to a Python that has CUDA torch and synctalk's dependencies.
  '$0 --dry-run' prints the plan without any of this.
EOF
  exit 3
}

TORCH_PIN="$(sed -n 's/^[[:space:]]*"torch==\([^"]*\)".*/\1/p' "$ROOT/pyproject.toml" | head -n 1)"
[ -n "$TORCH_PIN" ] || { say "no torch==X pin found in pyproject.toml"; exit 3; }

if ! ready; then
  case "${SYNCTALK_CUDA_TORCH_INDEX:-}" in
    */cpu|*/cpu/|*/whl/cpu*)
      say "SYNCTALK_CUDA_TORCH_INDEX=$SYNCTALK_CUDA_TORCH_INDEX is a CPU wheel index; the GPU check needs CUDA torch"
      exit 3 ;;
  esac
  PYTHON="${PYTHON:-python3}"
  made_venv=0
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
      || { say "synctalk needs Python >= 3.11 ($PYTHON is older); set PYTHON=python3.11 or newer"; exit 3; }
    say "creating $VENV"
    "$PYTHON" -m venv "$VENV"
    made_venv=1
  fi
  PY="$VENV/bin/python"
  # pip's config files and PIP_* sources may point at local CPU wheels, which pip prefers (+cpu sorts above the
  # plain version): torch comes from pip's default index (or $SYNCTALK_CUDA_TORCH_INDEX) alone.
  clean_pip() {
    env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_INDEX_URL -u PIP_NO_INDEX -u PIP_CONSTRAINT \
        PIP_CONFIG_FILE=/dev/null "$PY" -m pip --disable-pip-version-check "$@" \
        ${SYNCTALK_CUDA_TORCH_INDEX:+--index-url "$SYNCTALK_CUDA_TORCH_INDEX"}
  }
  if ! "$PY" -c 'import torch' 2>/dev/null; then
    if ! clean_pip index versions torch --retries 0 --timeout 20 >/dev/null; then
      [ "$made_venv" = 1 ] && rm -rf "$VENV"
      offline_help "no answer from the package index" "${SYNCTALK_CUDA_TORCH_INDEX:-the default index}"
    fi
    say "installing torch==$TORCH_PIN (the CUDA build) from ${SYNCTALK_CUDA_TORCH_INDEX:-the default index}"
    clean_pip install --quiet "torch==$TORCH_PIN" \
      || offline_help "pip could not install torch==$TORCH_PIN" "${SYNCTALK_CUDA_TORCH_INDEX:-the default index}"
  fi
  if ! "$PY" -c 'import sys, torch; sys.exit(torch.version.cuda is None)'; then
    say "$VENV has torch $("$PY" -c 'import torch; print(torch.__version__)'), a CPU-only build. Use a separate" \
        "environment for the GPU check: SYNCTALK_VENV=$ROOT/.venv-gpu $0 $*"
    exit 2
  fi
  # synctalk and the rest (torch==$TORCH_PIN is already satisfied by the CUDA build, so _env.sh keeps it).
  ( source "$ROOT/scripts/_env.sh" dev,gpu ) || offline_help "installing synctalk[dev,gpu] failed"
fi

exec "$VENV/bin/python" "$CHECK" "$@"
