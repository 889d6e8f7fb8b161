"""``datagen models``: the built-in models (or one checkpoint) and their layers.

Nothing heavy is imported here: the parser is built for every ``datagen`` command.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .app import add_command, add_trust_pickles


def cmd_models(a: argparse.Namespace) -> int:
    from ..models import builtin_models, load_generator

    specs = [a.model] if a.model else [f"builtin:{n}" for n in builtin_models()]
    out = []
    for spec in specs:
        gen = load_generator(spec, device="cpu", trust_pickles=a.trust_pickles)
        meta: dict[str, Any] = {}
        card = None
        if spec.startswith("builtin:"):
            d = builtin_models()[spec.split(":", 1)[1]]
            meta = json.loads((d / "config.json").read_text()).get("meta", {})
            card = d / "MODEL_CARD.md"
        out.append({"model": spec, "default_layer": gen.default_layer, "size_multiple": gen.size_multiple,
                    "native_size": list(gen.native_size), "parameters": sum(p.numel() for p in gen.module.parameters()),
                    "layers": [vars(l) for l in gen.layers()], "meta": meta, "card": str(card) if card else None})
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    if not out:
        print("no built-in models")
    for m in out:
        h, w = m["native_size"]
        print(f"{m['model']}  ({m['parameters'] / 1e6:.2f} M parameters; sizes: multiples of {m['size_multiple']} px, "
              f"{h}x{w} by default; default layer {m['default_layer']})")
        if m["meta"]:
            print("  trained: " + ", ".join(f"{k}={v}" for k, v in m["meta"].items() if k in ("step", "kimg", "wall_time_s", "crop")))
        if m["card"]:
            print(f"  model card: {m['card']}")
        print(f"  {'layer':<10} {'channels':>8} {'stride':>6}   size at {h} px")
        for l in m["layers"]:
            print(f"  {l['name']:<10} {l['channels']:>8} {l['stride']:>6}   {h // l['stride']}x{w // l['stride']}")
    return 0


def add_models_command(sub: Any) -> None:
    m = add_command(sub, "models", cmd_models, "list built-in models and their layers")
    m.add_argument("model", nargs="?", help="a model spec: builtin:NAME, a checkpoint folder or stylegan2:FILE.pkl "
                                            "(default: all built-in models)")
    m.add_argument("--json", action="store_true", help="print the list as JSON")
    add_trust_pickles(m)
