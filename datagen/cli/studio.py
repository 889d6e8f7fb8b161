"""``datagen studio``: the local web app (paint live on the model, browse and label vectors).

Starlette and uvicorn are imported only when the command runs (``pip install -e '.[studio]'``).
"""

from __future__ import annotations

import argparse
import ipaddress
import sys

from ..errors import DatagenError, UsageError
from .app import add_command, add_device, add_trust_pickles

INSTALL_HINT = "datagen studio needs starlette and uvicorn: pip install -e '.[studio]' (or pip install starlette uvicorn)"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def cmd_studio(a: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..studio.app import bind_socket, create_app
    except ImportError as e:
        raise DatagenError(f"{INSTALL_HINT} ({e})") from None
    from ..studio.session import Studio

    if not 0 <= a.port <= 65535:
        raise UsageError(f"must be 0..65535, got {a.port}", param="port")
    if a.threads:
        import torch

        torch.set_num_threads(max(1, a.threads))
    sock = None
    if not a.check:  # a busy port fails now, before the model is loaded
        try:
            sock = bind_socket(a.host, a.port)
        except OSError as e:
            raise DatagenError(f"cannot listen on {a.host}:{a.port}: {e.strerror or e}"
                               + ("; pick another --port (0: any free port)" if a.port else "")) from None
    studio = Studio(a.source, out_dir=a.out, seed=a.seed, device=a.device, trust_pickles=a.trust_pickles,
                    thumb_size=a.thumb_size)
    if studio.error:  # the page shows it too, and reloads once the file is fixed
        print(f"datagen studio: error: {studio.error}", file=sys.stderr)
    if sock is None:
        if studio.error:
            return 2
        st = studio.state()
        print(f"{a.source}: {len(st['classes'])} classes at {st['size'][0]}x{st['size'][1]} px, layer {st['layer']}, "
              f"libraries: {', '.join(l['name'] for l in st['libraries']) or 'none'}")
        return 0
    if not _is_loopback(a.host):
        print(f"datagen studio: warning: listening on {a.host}: anyone who can reach this machine can render, "
              "export and relabel the library (there is no login)", file=sys.stderr)
    app = create_app(studio, allowed_hosts=[] if _is_loopback(a.host) else ["*"])
    shown = f"[{a.host.strip('[]')}]" if ":" in a.host else a.host
    print(f"datagen studio: http://{shown}:{sock.getsockname()[1]}/  ({a.source}; Ctrl+C stops it)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn has shut down cleanly and passes Ctrl+C on
        pass
    print("datagen studio: stopped", file=sys.stderr)
    return 0


def add_studio_command(sub: argparse._SubParsersAction) -> None:
    s = add_command(sub, "studio", cmd_studio, "local web app: paint a label map live on the model, browse and label vectors")
    s.add_argument("source", metavar="RECIPE|LIBRARY", help="a recipe YAML, or a vector library folder "
                   "(then one class per label, or per cluster)")
    s.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only)")
    s.add_argument("--out", default="studio-out", help="folder the page's Save writes into")
    s.add_argument("--seed", type=int, default=0, help="seed of the samples' noise and vectors (the page sets the index)")
    add_device(s)
    s.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    s.add_argument("--thumb-size", type=int, default=None, help="vector thumbnail size in px (default: the library's extraction size)")
    s.add_argument("--check", action="store_true", help="load the recipe or library, report, and exit (no server)")
    add_trust_pickles(s)
