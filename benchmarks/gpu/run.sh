#!/usr/bin/env bash
# The GPU kit in one command (see kit.py for what it checks):
#   bash run.sh OUT_DIR [--device cuda|cpu] [--tiny] [--budget SECONDS] [--keep-weights] [--pack]
# Points the selfsup binary at the machine's libtorch (the torch package of
# $SELFSUP_KIT_PYTHON, default python3) and the pip NVIDIA libraries, prints
# nvidia-smi, then runs kit.py: OUT_DIR/results.json, OUT_DIR/results.md,
# OUT_DIR/logs/, OUT_DIR/runs/. Exit 0 when every row is ok.
set -uo pipefail
if [ $# -lt 1 ]; then
  echo "usage: bash run.sh OUT_DIR [--device cuda|cpu] [--tiny] [--budget SECONDS]" >&2
  exit 2
fi
KIT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="$1"; shift
PY="${SELFSUP_KIT_PYTHON:-python3}"
mkdir -p "$OUT"
TORCH_LIB="$("$PY" -c 'import torch,os; print(os.path.join(torch.__path__[0],"lib"))')" || {
  echo "run.sh: $PY cannot import torch: set SELFSUP_KIT_PYTHON to a Python with torch 2.11" >&2
  exit 2
}
SITE="$(dirname "$(dirname "$TORCH_LIB")")"
LIBS="$TORCH_LIB"
for d in "$SITE"/nvidia/*/lib; do
  [ -d "$d" ] && LIBS="$LIBS:$d"
done
export LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "run.sh: libtorch from $TORCH_LIB ($("$PY" -c 'import torch; print(torch.__version__)'))"
chmod +x "$KIT/selfsup" 2>/dev/null || true
exec "$PY" "$KIT/kit.py" "$OUT" "$@"
