"""Live-render latency of ``datagen studio``: a stroke's label map POSTed -> the rendered image received.

The page sends the whole label map after every mouse move (one request in flight) and shows
the PNG it gets back, so this latency is what a painter waits for. The benchmark serves the
studio with uvicorn on 127.0.0.1 in a thread, draws a stroke disc by disc, and POSTs each
intermediate map over one keep-alive HTTP connection (as the browser does), timing from the
first byte sent to the last byte of the image received. It also reports the model's part
(``X-Render-Ms``: painting plan + forward pass, measured by the server) and the same render
called in-process without HTTP (``Studio.render``), interleaved with the HTTP requests.

Default: the demo recipe (built-in model, 256 px; target <= 300 ms median on 2 CPU cores).

    python benchmarks/bench_studio.py [--recipe R] [--reps 30] [--threads N] [--device cuda]
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import threading
import time

import _common as C

TARGET_MS = 300.0


def stroke_maps(size: tuple[int, int], eraser: int, cls: int, n: int):  # type: ignore[no-untyped-def]
    """``n`` label maps of one stroke being drawn: each adds a disc (radius 16 px) further along a diagonal."""
    import numpy as np

    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    m = np.full((h, w), eraser, np.uint8)
    out = []
    for k in range(n):
        t = k / max(n - 1, 1)
        cy, cx = h * (0.2 + 0.6 * t), w * (0.2 + 0.6 * (t * 1.7 % 1.0))
        m[(yy - cy) ** 2 + (xx - cx) ** 2 <= max(4, min(h, w) // 16) ** 2] = cls
        out.append(m.copy())
    return out


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_args(p)
    p.add_argument("--reps", type=int, default=30, help="stroke steps POSTed (each one live render)")
    a = p.parse_args(argv)
    if a.quick:
        a.reps = min(a.reps, 4)
    C.setup_threads(a.threads)
    device = C.resolve_device(a.device)

    import uvicorn

    from datagen.studio.app import bind_socket, create_app
    from datagen.studio.session import Studio

    recipe = C.recipe_from_args(a)
    t0 = time.perf_counter()
    studio = Studio(recipe, device=device)
    if studio.error:
        raise SystemExit(f"bench_studio: {studio.error}")
    load_s = time.perf_counter() - t0
    st = studio.state()
    size = tuple(st["size"])
    cls = next(c["id"] for c in st["classes"] if not c["keep"])
    maps = stroke_maps(size, st["eraser"], cls, a.reps)

    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(studio), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    conn = http.client.HTTPConnection("127.0.0.1", sock.getsockname()[1], timeout=120)

    def post(body: bytes, index: int) -> tuple[float, float]:
        t = time.perf_counter()
        conn.request("POST", f"/api/render?index={index}", body=body, headers={"Content-Type": "application/octet-stream"})
        res = conn.getresponse()
        png = res.read()
        dt = time.perf_counter() - t
        if res.status != 200 or not png.startswith(b"\x89PNG"):
            raise RuntimeError(f"render failed: {res.status} {png[:200]!r}")
        return dt * 1000, float(res.getheader("X-Render-Ms"))

    def direct(body: bytes, index: int) -> float:
        t = time.perf_counter()
        studio.render(studio.paint_request(body, index=index))
        return (time.perf_counter() - t) * 1000

    try:
        post(maps[0].tobytes(), 0)  # warm-up: first forward pass, allocator, connection
        direct(maps[0].tobytes(), 0)
        http_ms, model_ms, direct_ms = [], [], []
        for k, m in enumerate(maps):  # interleaved, the order alternating, so background load hits both alike
            body = m.tobytes()
            if k % 2:
                direct_ms.append(direct(body, 0))
            lat, mod = post(body, 0)
            http_ms.append(lat)
            model_ms.append(mod)
            if not k % 2:
                direct_ms.append(direct(body, 0))
    finally:
        conn.close()
        server.should_exit = True
        thread.join(30)
        sock.close()

    def stats(xs: list[float]) -> dict:
        return {"median": round(statistics.median(xs), 1), "p90": round(percentile(xs, 0.9), 1),
                "min": round(min(xs), 1), "max": round(max(xs), 1)}

    med = statistics.median(http_ms)
    result = {
        "benchmark": "studio_live_render",
        "recipe": str(recipe),
        "size": list(size),
        "layer": st["layer"],
        "requests": len(http_ms),
        "latency_ms": stats(http_ms),
        "server_model_ms": stats(model_ms),
        "in_process_render_ms": stats(direct_ms),
        "http_and_png_overhead_ms": round(med - statistics.median(model_ms), 1),
        "target_ms": TARGET_MS,
        "meets_target": med <= TARGET_MS,
        "load_s": round(load_s, 2),
        "machine": C.machine_info(device),
    }
    C.emit(result, a)
    return result


if __name__ == "__main__":
    main()
