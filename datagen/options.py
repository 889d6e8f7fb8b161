"""Choices and defaults of arguments that both the library and the CLI use.

Import-light on purpose (no torch, zarr or scipy): the CLI builds its parser, and
``datagen --help`` shows these, without loading the heavy modules that use them.
"""

from __future__ import annotations

#: Dataset formats of ``generate`` (one writer each in datagen.writers).
FORMATS = ("zarr", "tiff")
#: ``verify`` levels of a resumed ``generate``: ``files`` checks each recorded block's files (size and
#: sha256 against the manifest), ``full`` also decodes and hashes every sample, ``none`` trusts the manifest.
VERIFY_LEVELS = ("files", "full", "none")

#: Canvas render tile (px): memory grows with it.
DEFAULT_TILE = 1024
#: ``datagen qc`` on a canvas: the window (px) level 0 is cut into, one pair per window.
QC_WINDOW = 256
#: Canvas TIFF tile and zarr chunk size (px).
DEFAULT_TIFF_TILE = 512
#: Canvas image compressions (the mask is always lossless).
COMPRESSIONS = ("zlib", "jpeg", "zstd", "lzw", "none")

#: The devices a ``device`` argument accepts.
DEVICE_HELP = "auto (CUDA when present), cpu, cuda or cuda:N"

#: canvas TIFF layouts: OME-TIFF (SubIFD pyramid) or generic tiled TIFF (levels in the main IFD chain: OpenSlide)
TIFF_LAYOUTS = ("ome", "generic")
