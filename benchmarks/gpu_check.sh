#!/usr/bin/env bash
# One unattended GPU check of deramos-reward (see benchmarks/gpu_check.py for what it measures).
#
#   bash benchmarks/gpu_check.sh                      # first CUDA GPU, <= 8 min, writes ./gpu_check_out/
#   bash benchmarks/gpu_check.sh --smoke              # same code paths, tiny sizes, CPU (tests run this)
#   bash benchmarks/gpu_check.sh --out DIR --sections judge determinism
#
# --out (default gpu_check_out) and $PYTHON are relative to the folder the script is run from. Python:
# $PYTHON if set, else the repository's .venv if there is one, else python3. Wheels in .wheels/
# (benchmarks/gpu_wheels.sh downloads the ones a bare CUDA image lacks) are installed into a
# temporary folder first, without network access, and put ahead on PYTHONPATH.
set -euo pipefail
CALLER="$PWD"
absolute() { case "$1" in /*) printf '%s' "$1" ;; *) printf '%s/%s' "$CALLER" "$1" ;; esac; }
ARGS=()
OUT_GIVEN=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT_GIVEN=1; ARGS+=("$1"); shift; if [ $# -gt 0 ]; then ARGS+=("$(absolute "$1")"); shift; fi ;;
    --out=*) OUT_GIVEN=1; ARGS+=("--out=$(absolute "${1#--out=}")"); shift ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
if [ "$OUT_GIVEN" = 0 ]; then ARGS+=(--out "$CALLER/gpu_check_out"); fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-}"
case "$PY" in */*) PY="$(absolute "$PY")" ;; esac
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if compgen -G ".wheels/*.whl" > /dev/null; then
  TMP_SITE="$(mktemp -d)"
  trap 'rm -rf "$TMP_SITE"' EXIT
  # named site-packages: dill (datasets' fingerprinting) pickles modules from any other folder by value
  SITE="$TMP_SITE/site-packages"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check --target "$SITE" .wheels/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$PY" benchmarks/gpu_check.py "${ARGS[@]}"
