#!/usr/bin/env bash
# Labels of the shipped library, run after scripts/build_vector_library.sh.
# Chosen by looking at report.html (full-replace renders per cluster) for builtin:tissue-small
# at step 4978: each class takes the 3 most tileable vectors of each cluster that draws it.
# Clusters under the tileability threshold (1, 2, 7, 8: dark purple, glass edge) and close
# variants of the labelled kinds (4, 5, 6) are left unlabelled.
set -euo pipefail
lib=${1:-vector_libraries/tissue-small}
dg=${DATAGEN:-datagen}
# lilac cytoplasm with scattered large dark nuclei
$dg vectors label "$lib" --name tumor --cluster 3 --top-tileable 3
$dg vectors label "$lib" --name tumor --cluster 11 --top-tileable 3
# pink fibres with white clefts
$dg vectors label "$lib" --name stroma --cluster 10 --top-tileable 3
$dg vectors label "$lib" --name stroma --cluster 0 --top-tileable 3
# dense dark-purple cellular tissue with white clefts
$dg vectors label "$lib" --name dense --cluster 9 --top-tileable 3
