"""The activation-vector loop: extract -> visualise -> score tileability -> cluster -> label.

    lib = extract_vectors(gen, "dec.x16", 256, size=256, per_image=8, model_spec="builtin:tissue-small")
    cluster_library(lib, k=16)
    score_library(lib, gen, seeds=4)                       # paper sec. 4.2
    full = visualize(gen, lib.vectors, lib.layer, mode="full", size=256)
    grid = visualize(gen, lib.vectors, lib.layer, mode="grid", grid=2, size=256)
    html_report(lib, full, grid, "report.html")
    lib.set_label(lib.ids[:3], "tumor"); lib.save("vector_libraries/tissue-small")

See docs/vectors.md.
"""

from .cluster import Clustering, cluster_library, cluster_vectors
from .extract import count_distinct, extract_vectors, regenerate_image, resolve_layer_name, resolve_size
from .library import SIDECAR_FILE, VECTORS_FILE, VectorLibrary, VectorRecord, label_vectors, library_lock, rename_label
from .report import contact_sheet, data_uri, html_report, separability_html, sheet_size, vector_caption
from .separability import (
    ClassSeparabilityWarning,
    SeparabilityReport,
    check_recipe_separability,
    library_classes,
    measure_separability,
)
from .tileability import (
    TILEABILITY_GRID,
    default_threshold,
    mask_weights,
    masked_mean,
    rank_tileable,
    score_library,
    tileability_scores,
)
from .visualize import grid_mask_at_image, iter_renders, make_edit, resolve_seeds, to_uint8, visualize

__all__ = [
    "ClassSeparabilityWarning", "Clustering", "SIDECAR_FILE", "SeparabilityReport", "check_recipe_separability",
    "library_classes", "measure_separability", "TILEABILITY_GRID", "VECTORS_FILE", "VectorLibrary", "VectorRecord",
    "cluster_library", "cluster_vectors", "contact_sheet", "data_uri", "default_threshold",
    "count_distinct", "extract_vectors", "grid_mask_at_image", "html_report", "iter_renders", "label_vectors", "library_lock", "make_edit", "mask_weights",
    "masked_mean", "rank_tileable", "regenerate_image", "resolve_layer_name", "rename_label", "resolve_seeds",
    "resolve_size", "score_library", "separability_html", "sheet_size", "tileability_scores", "to_uint8", "vector_caption",
    "visualize",
]
