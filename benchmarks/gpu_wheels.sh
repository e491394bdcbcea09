#!/usr/bin/env bash
# Download the wheels benchmarks/gpu_check.sh needs on a bare CUDA image into .wheels/ (git-ignored).
#
# Run it where the package registry is reachable; then send .wheels/ along with the checkout to the GPU
# machine, where gpu_check.sh installs them offline into a temporary folder ahead of the image's own.
# The target image (see BENCHMARKS.md, "GPU check") has Python 3.12, torch, torchaudio, torchvision,
# numpy, einops, accelerate, safetensors, pandas, pyarrow, regex and tqdm, but not muq, soundfile or
# datasets, and its transformers (5.x), tokenizers and huggingface_hub are newer than muq and this
# project's tests use. These wheels (about 20 MB) are what is missing or must be replaced:
#   - the test-suite pins of requirements-dev.lock: transformers, tokenizers, huggingface_hub, muq,
#     soundfile, datasets, peft;
#   - their dependencies the image lacks: easydict, x-clip, beartype, ftfy, wcwidth (muq), cffi,
#     pycparser (soundfile), dill, multiprocess (datasets).
#
#   bash benchmarks/gpu_wheels.sh                  # Python 3.12, manylinux x86_64
#   PY_VERSION=3.11 bash benchmarks/gpu_wheels.sh  # another Python
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY_VERSION="${PY_VERSION:-3.12}"
mapfile -t PINNED < <(grep -E '^(transformers|tokenizers|huggingface_hub|soundfile|datasets|peft)==' requirements-dev.lock)
MUQ="$(grep -E '^muq==' requirements-dev.lock)"  # published as a source archive only: built into a wheel here
EXTRA=(easydict==1.14 x-clip==0.14.4 beartype==0.23.1 ftfy==6.3.1 wcwidth==0.9.4 cffi==2.1.1 pycparser==3.12
       dill==0.4.1 multiprocess==0.70.19)
rm -rf .wheels && mkdir -p .wheels
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
  "${PLATFORMS[@]}" -d .wheels "${PINNED[@]}" "${EXTRA[@]}"
python3 -m pip wheel -q --no-deps -w .wheels "$MUQ"
ls -1 .wheels
du -sh .wheels
