"""Execution engines that fan ``datagen generate`` out over many processes or machines.

``datagen.engines.processes``: the local worker processes ``generate(workers=...)`` uses on
a multi-core CPU (one single-threaded renderer per core; the caller keeps the writer).
``datagen.engines.ray``: :func:`~datagen.engines.ray.generate_ray` runs blocks
as Ray tasks on a local or remote Ray cluster (optional dependency:
``pip install 'datagen[ray]'``). Engines are imported lazily: importing this
package never imports Ray.
"""

__all__ = ["processes", "ray"]
