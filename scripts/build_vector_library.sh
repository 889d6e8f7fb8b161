#!/usr/bin/env bash
# Build the shipped vector library of a model: extract -> cluster -> score -> show.
# Labelling (which clusters are which tissue) is a human decision made from the
# report; the label commands used for the shipped library are in
# vector_libraries/<name>/LABELS.sh, run after this script.
#   scripts/build_vector_library.sh [MODEL] [OUT]
set -euo pipefail
model=${1:-builtin:tissue-small}
out=${2:-vector_libraries/tissue-small}
dg=${DATAGEN:-datagen}
size=${SIZE:-128}
$dg vectors extract --model "$model" --layer dec.x16 --num-images 192 --per-image 1 --size "$size" \
    --clusters 12 --seed 0 --device cpu --out "$out"
$dg vectors score "$out" --seeds 3 --size "$size" --device cpu
$dg vectors show "$out" --seeds 2 --size "$size" --device cpu --top 32 --out "$out"
