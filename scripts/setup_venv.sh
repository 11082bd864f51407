#!/usr/bin/env bash
# Create or refresh .venv from the lock, one progress line per stage.
#   scripts/setup_venv.sh PYTHON [--force]
# Called by ./task when the stamp is stale (pyproject.toml or the lock
# changed) and by `task setup`. Everything comes from requirements/dev.lock,
# with hashes: nothing is resolved here, so every machine gets the same files.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="$1"
LOCK=requirements/dev.lock
stamp_of() { cat pyproject.toml "$LOCK" | "$PY" -c 'import hashlib,sys;print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:16])'; }
stamp=".venv/.installed-$(stamp_of)"
if [ "${2:-}" != "--force" ] && [ -f "$stamp" ] && [ -x .venv/bin/task ]; then
  exit 0
fi
start=$SECONDS
pins=$(grep -cE '^[A-Za-z0-9]' "$LOCK")
if [ ! -x .venv/bin/python ]; then
  echo "setup 1/3: creating .venv with $("$PY" --version 2>&1)" >&2
  "$PY" -m venv .venv
else
  echo "setup 1/3: .venv exists ($(.venv/bin/python --version 2>&1))" >&2
fi
echo "setup 2/3: installing $pins pinned packages from $LOCK (hash-checked)" >&2
# -qq: pip's notices, progress bars and warnings (and the build backend's
# editable-install notice) are dropped; its errors still show.
.venv/bin/python -m pip install -qq --disable-pip-version-check --no-input \
  --require-hashes -r "$LOCK"
echo "setup 3/3: installing change6-twin from this checkout (editable, no new dependencies)" >&2
.venv/bin/python -m pip install -qq --disable-pip-version-check --no-input \
  --no-deps --no-build-isolation -e .
rm -f .venv/.installed-*
touch "$stamp"
echo "setup done in $((SECONDS - start)) s" >&2
