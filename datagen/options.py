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

#: Rendering arithmetic (``generate --precision``): auto is float16 on CUDA and float32 on a CPU; fp16
#: is float16 on CUDA (a CPU renders float32); bf16 is bfloat16 autocast on either (opt-in: faster on a
#: CPU with AVX512-BF16 or AMX); fp32 is float32 everywhere.
PRECISIONS = ("auto", "fp32", "fp16", "bf16")

#: The devices a ``device`` argument accepts.
DEVICE_HELP = "auto (CUDA when present), cpu, cuda or cuda:N"

#: canvas TIFF layouts: OME-TIFF (SubIFD pyramid) or generic tiled TIFF (levels in the main IFD chain: OpenSlide)
TIFF_LAYOUTS = ("ome", "generic")
