"""What crosses between the page and the session: label maps in, PNGs out, paths checked, and
errors as the one line the CLI would print. No model and no web framework here."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DatagenError

#: Largest label map, PNG or raw, the page may send (bytes).
MAX_UPLOAD = 32 << 20


class PathEscapeError(DatagenError):
    """A path sent by the page points outside the folder it must stay in."""


def one_line(e: BaseException) -> str:
    """An error's message as the CLI prints it after ``datagen COMMAND: error:`` (one line)."""
    msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return " ".join(msg.splitlines())


#: What a bad recipe, library or request raises; the CLI prints the same kinds as one line.
USER_ERRORS = (DatagenError, ValueError, KeyError, FileNotFoundError, PermissionError)


def resolve_within(root: Path, name: str, what: str) -> Path:
    """``root / name`` resolved (symlinks followed); PathEscapeError unless it stays inside ``root``.

    ``name`` must be relative: absolute paths, ``..`` that climbs out of ``root`` and links that
    point elsewhere are refused."""
    if not isinstance(name, str) or not name.strip() or "\x00" in name:
        raise PathEscapeError(f"{what}: expected a non-empty relative path, got {name!r}")
    p = Path(name)
    if p.is_absolute() or p.drive or name.startswith(("/", "\\", "~")):
        raise PathEscapeError(f"{what}: expected a path relative to {root}, got the absolute path {name!r}")
    base = root.resolve()
    full = (base / p).resolve()
    if not full.is_relative_to(base):
        raise PathEscapeError(f"{what}: {name!r} is outside {base}")
    return full


def encode_png(a: np.ndarray) -> bytes:
    """A uint8 (H, W) or (H, W, 3) array as PNG bytes (fast compression: these are served live)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_label_map(data: bytes, size: tuple[int, int], allowed: set[int]) -> np.ndarray:
    """The page's label map: a PNG (grey, paletted, or RGB with equal channels: class ids) or the
    raw H*W bytes; its size must be the recipe's and every value one of ``allowed``."""
    h, w = size
    if len(data) > MAX_UPLOAD:
        raise DatagenError(f"label map: {len(data)} bytes is more than the {MAX_UPLOAD} a label map may have")
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        try:
            with Image.open(io.BytesIO(data)) as im:
                if im.size != (w, h):
                    raise DatagenError(f"label map is {im.size[1]}x{im.size[0]} px; the recipe paints {h}x{w}")
                im.load()
                arr = np.asarray(im if im.mode in ("L", "P") else im.convert("RGB"))
        except (OSError, ValueError) as e:
            raise DatagenError(f"label map: cannot read the PNG: {e}") from None
        if arr.ndim == 3:
            if not ((arr[..., 0] == arr[..., 1]).all() and (arr[..., 0] == arr[..., 2]).all()):
                raise DatagenError("label map: a colour PNG; expected class ids (grey values, or R = G = B)")
            arr = arr[..., 0]
    elif len(data) == h * w:
        arr = np.frombuffer(data, dtype=np.uint8).reshape(h, w)
    else:
        raise DatagenError(f"label map: expected a PNG or {h}*{w} = {h * w} raw bytes (one class id per pixel), "
                           f"got {len(data)} bytes")
    arr = np.array(arr, dtype=np.uint8)
    bad = sorted(set(np.unique(arr).tolist()) - allowed)
    if bad:
        raise DatagenError(f"label map has values that are not class ids: {bad[:8]}; expected only "
                           f"{sorted(allowed)}")
    return arr
