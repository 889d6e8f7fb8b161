#!/usr/bin/env bash
# Labels of the shipped library, run after scripts/build_vector_library.sh.
# Chosen for builtin:tissue-small at step 6804 by looking at full-replace renders of every
# cluster and by `datagen vectors separability LIB --by-cluster --method painted` (which
# clusters a pixel model can tell apart when painted side by side): each class takes the
# most tileable vectors of one cluster that was >= 58 % separable and not confused with
# another labelled cluster. The library holds 83 distinct vectors (192 images, near-copies
# dropped: dec.x16 is one vector per image). Left unlabelled: 0 (pink collagen and glass,
# 37 % read as 6, 22 % as 7), 1 (purple with glass holes, read as 3 and 6), 4, 5 and 10
# (pale cellular, read as 8), 9 (purple bands on glass, 26 % read as 2), 11 (read as 2).
set -euo pipefail
lib=${1:-vector_libraries/tissue-small}
dg=${DATAGEN:-datagen}
# glass with a few tissue fragments (0.81 glass in full replace)
$dg vectors label "$lib" --name background --cluster 6 --top-tileable 6
# purple cellular tissue with round dark nuclei
$dg vectors label "$lib" --name tumor --cluster 8 --top-tileable 6
# pink wavy collagen with sparse nuclei
$dg vectors label "$lib" --name stroma --cluster 7 --top-tileable 6
# dark purple dense streaks
$dg vectors label "$lib" --name dense --cluster 3 --top-tileable 6
# pink loose tissue with white gaps (not in the demo recipe)
$dg vectors label "$lib" --name loose --cluster 2 --top-tileable 6
