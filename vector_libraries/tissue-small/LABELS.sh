#!/usr/bin/env bash
# Labels of the shipped library, run after scripts/build_vector_library.sh.
# PROVISIONAL: builtin:tissue-small is still undertrained (near-flat samples), so every vector
# scores tileability 1.0 and the clusters are not yet distinct tissues. These commands give
# the three largest clusters class names (their 3 top-ranked vectors each) so the demo recipe
# runs; rebuild and relabel from the report once the model is trained further.
set -euo pipefail
lib=${1:-vector_libraries/tissue-small}
dg=${DATAGEN:-datagen}
$dg vectors label "$lib" --name tumor --cluster 0 --top-tileable 3
$dg vectors label "$lib" --name stroma --cluster 10 --top-tileable 3
$dg vectors label "$lib" --name lymphocytes --cluster 4 --top-tileable 3
