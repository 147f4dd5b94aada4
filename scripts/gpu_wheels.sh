#!/usr/bin/env bash
# Fill .whl/ with the wheels scripts/gpu_check.sh installs on a bare GPU machine (Python 3.12, manylinux x86-64,
# CUDA torch already there, no package index). Run on a machine that reaches PyPI:   bash scripts/gpu_wheels.sh
#
# Only what such a machine lacks or holds at another version than requirements.txt pins; torch, numpy, pillow,
# accelerate, safetensors, tqdm, pyyaml, timm, torchvision, onnxruntime, opencv are taken from the machine.
# Every wheel is --no-deps, so the list names each dependency itself; keep one version of each. Left out on
# purpose: hf-xet (the machine has one) and nudenet (10.6 MB): the device tool carries at most 64 MiB with the
# working tree (~35 MB), so the check evaluates FID / CLIP score / cost, not NudeNet ASR, on the GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=.whl
WHEELS=(
  diffusers==0.42.1 transformers==5.24.0 tokenizers==0.23.3 huggingface_hub==2.4.0
  httpx2==2.17.0 httpcore2==2.17.0 truststore==0.10.5 importlib_metadata==10.2.0 zipp==4.1.2
  omegaconf==2.4.0 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.2.13
)
mkdir -p "$DEST"
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
"$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  --platform any -d "$DEST" "${WHEELS[@]}"
ls -1 "$DEST"
du -sh "$DEST"
