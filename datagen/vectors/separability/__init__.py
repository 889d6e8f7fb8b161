"""Class separability: can the classes a recipe paints be told apart in the images? (issue 9)

A segmentation model can only learn a mask that the image supports. If two classes
are painted with vectors that draw the same thing, every generated pair labels the
same texture two ways and the mask is noise there. This module measures that
*before* generating, from the vectors alone:

1. Every vector of every class (at most ``max_vectors`` per class, picked evenly
   over the class's ids so the result is deterministic) is rendered full-replace
   (the whole paint layer := v, :func:`datagen.vectors.visualize`) for each noise
   seed in ``seeds``.
2. Each render goes through the frozen feature extractor that tileability uses
   (EfficientNet-Lite0 ``blocks.4``, stride 8); the render's descriptor is the
   per-channel spatial mean and standard deviation of that feature map (a texture
   descriptor), z-scored per dimension over all renders of the measurement.
3. Every render is classified by the nearest class centroid (cosine similarity),
   leaving its own vector out of its own class's centroid (*leave one vector
   out*: the other seeds of the same vector would make the test too easy). A class
   with a single vector leaves out only the render itself; a class with a single
   render keeps it.
4. The counts give a confusion matrix (rows: true class, columns: predicted class,
   each row normalised to sum to 1), per-class accuracy (its diagonal) and the
   centroid cosine-similarity matrix.

A pair of classes (a, b) is *inseparable* when ``confusion[a, b] + confusion[b, a]
>= threshold`` (default :data:`DEFAULT_THRESHOLD` = 0.2), or when the two classes
share a vector (the same id, or an identical tensor) - a shared vector is label
noise by construction, whatever the renders look like.

:func:`check_recipe_separability` runs this for a recipe's painted classes (``keep``
classes are skipped) and emits one :class:`ClassSeparabilityWarning` per inseparable
pair; ``datagen preview`` and ``datagen generate`` call it once per process for each
(recipe classes, model, library) combination. Set ``DATAGEN_SEPARABILITY=0`` to skip it.
Modules: :mod:`.measure` (both measurements), :mod:`.report` (the result and
``LIBRARY/separability.json``), :mod:`.check` (the per-run warning). See docs/vectors.md#separability.
"""

from .check import DOCS, ENV_VAR, ClassSeparabilityWarning, check_recipe_separability, clear_cache, pair_message, recipe_classes
from .measure import (
    DEFAULT_MAX_VECTORS,
    DEFAULT_SEEDS,
    DEFAULT_SIZE,
    default_extractor,
    library_classes,
    measure_painted_separability,
    measure_separability,
    measure_size,
    pick_evenly,
)
from .report import (
    DEFAULT_THRESHOLD,
    RESULT_FILE,
    InseparablePair,
    SeparabilityReport,
    confusion_from_predictions,
    inseparable_pairs,
    load_result,
    save_result,
)

__all__ = [
    "ClassSeparabilityWarning", "DEFAULT_MAX_VECTORS", "DEFAULT_SEEDS", "DEFAULT_SIZE", "DEFAULT_THRESHOLD", "DOCS",
    "ENV_VAR", "InseparablePair", "RESULT_FILE", "SeparabilityReport", "check_recipe_separability", "clear_cache",
    "confusion_from_predictions", "default_extractor", "inseparable_pairs", "library_classes", "load_result",
    "measure_painted_separability", "measure_separability", "measure_size", "pair_message", "pick_evenly",
    "recipe_classes", "save_result",
]
