#!/usr/bin/env bash
# Labels of the shipped library, run after scripts/build_vector_library.sh.
# Chosen for builtin:tissue-small at step 6804 by looking at full-replace renders of every
# cluster and by `datagen vectors separability LIB --by-cluster --method painted` (which
# clusters a pixel model can tell apart when painted side by side): each class takes the
# most tileable vectors of clusters that were >= 76 % separable and not confused with
# another labelled cluster. Left unlabelled: 1 (purple bands on glass, 23 % read as 7),
# 3 (purple spindle, confused with 8 and 10), 4 (read as 0 or 7), 5 and 11 (cellular,
# confused with each other and with 8), 9 (pale loose, 31 % read as 2).
set -euo pipefail
lib=${1:-vector_libraries/tissue-small}
dg=${DATAGEN:-datagen}
# purple cellular tissue with round dark nuclei
$dg vectors label "$lib" --name tumor --cluster 8 --top-tileable 6
# pink wavy collagen with sparse nuclei (clusters 0 and 6 draw the same)
$dg vectors label "$lib" --name stroma --cluster 0 --top-tileable 6
$dg vectors label "$lib" --name stroma --cluster 6 --top-tileable 3
# dark purple dense streaks
$dg vectors label "$lib" --name dense --cluster 10 --top-tileable 6
# glass with a few small tissue fragments
$dg vectors label "$lib" --name background --cluster 7 --top-tileable 6
# pale pink loose tissue with nuclei (not in the demo recipe: qc reads 10 % of it as tumor)
$dg vectors label "$lib" --name loose --cluster 2 --top-tileable 6
