"""datagen studio: the session, the HTTP API (Starlette's TestClient) and the page in a real headless browser.

The browser test drives Debian's Chromium through its chromedriver (Selenium); it fails,
and does not skip, where they are missing: ``.ci/run`` installs them
(``apt-get install -y chromium chromium-driver``).
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import textwrap
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_tiny_assets

pytest.importorskip("starlette", reason="pip install -e '.[studio]'")  # part of the test extra
from starlette.testclient import TestClient  # noqa: E402

from datagen.studio.app import bind_socket, create_app  # noqa: E402
from datagen.studio.wire import resolve_within  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64  # the tiny model: stride 8, painted at dec.x4 (16x16 cells of 4 px)


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def read_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """The tiny model and library (conftest), a recipe without keep classes (mask: layout) and a second
    library of the same model at another layer, beside the first (the page's paint-layer choice)."""
    from datagen.models import load_checkpoint
    from datagen.vectors import extract_vectors

    d = tmp_path_factory.mktemp("studio")
    make_tiny_assets(d, size=SIZE)
    (d / "nokeep.yaml").write_text(textwrap.dedent(f"""\
        model: {d / 'model'}
        layer: dec.x4
        library: library
        size: [{SIZE}, {SIZE}]
        classes:
          - {{name: tumor, id: 1, color: "#d62728", vectors: [0, 1, 2]}}
          - {{name: stroma, id: 2, color: "#1f77b4", vectors: [{{id: 5, weight: 2}}, 6]}}
        layout: {{kind: voronoi, classes: {{tumor: 1, stroma: 1}}, cells: [3, 8]}}
        paint: {{mask: layout}}
        """))
    gen = load_checkpoint(d / "model")
    extract_vectors(gen, "dec.x2", 2, size=SIZE, seed=1, per_image=8, progress=False,
                    model_spec=str(d / "model")).save(d / "library-x2")
    return d


@pytest.fixture
def work(tiny_dir, tmp_path):
    """A writable copy of the tiny assets (labelling rewrites library.yaml)."""
    d = tmp_path / "assets"
    shutil.copytree(tiny_dir, d)
    for r in ("recipe.yaml", "nokeep.yaml", "library/library.yaml", "library-x2/library.yaml"):  # the copy's model
        (d / r).write_text((d / r).read_text().replace(str(tiny_dir), str(d)))
    return d


def client_for(source, out_dir, **kw) -> TestClient:
    return TestClient(create_app(source, out_dir=out_dir, device="cpu", **kw), base_url="http://127.0.0.1")


@pytest.fixture
def client(work, tmp_path):
    return client_for(work / "nokeep.yaml", tmp_path / "out")


def stroke_map(eraser: int, cls: int = 1, size: int = SIZE) -> np.ndarray:
    m = np.full((size, size), eraser, np.uint8)
    m[20:36, 8:40] = cls
    return m


# ---- the session and the API ------------------------------------------------------------

def test_state_lists_classes_eraser_and_paint_layers(client):
    st = client.get("/api/state").json()
    assert st["error"] is None and st["size"] == [SIZE, SIZE] and st["mask_mode"] == "layout"
    by_id = {c["id"]: c for c in st["classes"]}
    # no keep class in the recipe: the eraser paints an added keep class with a free id (0), not 255 (ignore)
    assert st["eraser"] == 0 and by_id[0]["keep"] and by_id[0].get("eraser") and by_id[1]["name"] == "tumor"
    assert [(l["name"], l["layer"], l["layer_size"]) for l in st["libraries"]] == [
        ("library", "dec.x4", [16, 16]), ("library-x2", "dec.x2", [32, 32])]


def test_render_live_image(client):
    blank = np.zeros((SIZE, SIZE), np.uint8)
    painted = stroke_map(0)
    r0 = client.post("/api/render?index=0", content=blank.tobytes())
    assert r0.status_code == 200 and r0.headers["content-type"] == "image/png" and float(r0.headers["x-render-ms"]) > 0
    img0 = read_png(r0.content)
    assert img0.shape == (SIZE, SIZE, 3)
    r1 = client.post("/api/render?index=0", content=png(painted))  # a PNG map works as the raw bytes do
    r1b = client.post("/api/render?index=0", content=painted.tobytes())
    assert r1.content == r1b.content  # and a render is deterministic
    img1 = read_png(r1.content)
    diff = np.abs(img1.astype(int) - img0.astype(int)).max(-1)
    assert diff[20:36, 8:40].mean() > 5  # painted where painted
    # new noise: another sample index is another image of the same map
    r2 = client.post("/api/render?index=1", content=painted.tobytes())
    assert r2.status_code == 200 and r2.content != r1.content
    # soft boundary and the other paint layer render too
    assert client.post("/api/render?index=0&soft=0.5", content=painted.tobytes()).content != r1.content
    r3 = client.post("/api/render?index=0&library=library-x2", content=painted.tobytes())
    assert r3.status_code == 200 and r3.content != r1.content


@pytest.mark.parametrize("body, query, message", [
    (np.zeros((32, 32), np.uint8).tobytes(), "", "raw bytes"),
    (png(np.zeros((32, 32), np.uint8)), "", "label map is 32x32 px; the recipe paints 64x64"),
    (np.full((SIZE, SIZE), 7, np.uint8).tobytes(), "", "not class ids: [7]"),
    (png((np.zeros((SIZE, SIZE, 3), np.uint8) + [0, 0, 9]).astype(np.uint8)), "", "colour PNG"),
    (b"\x89PNG\r\n\x1a\nbroken", "", "cannot read the PNG"),
    (np.zeros((SIZE, SIZE), np.uint8).tobytes(), "?soft=2", "soft boundary must be in [0, 1]"),
    (np.zeros((SIZE, SIZE), np.uint8).tobytes(), "?index=-1", "sample index"),
    (np.zeros((SIZE, SIZE), np.uint8).tobytes(), "?index=x", "index: expected a whole number"),
    (np.zeros((SIZE, SIZE), np.uint8).tobytes(), "?library=nope", "not one of this session's libraries"),
])
def test_render_refuses_bad_maps_with_a_message(client, body, query, message):
    r = client.post(f"/api/render{query}", content=body)
    assert r.status_code == 400 and message in r.json()["error"]


def test_random_layout_is_the_recipe_layout(client, work):
    from datagen.generate import build_renderer, load_recipe_model
    from datagen.recipe import load_recipe

    r = client.get("/api/layout?index=3")
    assert r.status_code == 200
    got = np.frombuffer(r.content, np.uint8).reshape(SIZE, SIZE)
    recipe = load_recipe(work / "nokeep.yaml")
    want = build_renderer(recipe, load_recipe_model(recipe, "cpu"), 0).make_layout(3)
    assert np.array_equal(got, want)


def test_vectors_list_and_thumbnails(client, work):
    from datagen.vectors import VectorLibrary

    lib = VectorLibrary.load(work / "library")
    v = client.get("/api/vectors").json()
    assert v["library"] == "library" and [r["id"] for r in v["vectors"]] == lib.ids
    used = {r["id"]: r["classes"] for r in v["vectors"]}
    assert used[0] == ["tumor"] and used[5] == ["stroma"] and used[3] == []
    for mode in ("full", "grid"):
        t = client.get(f"/api/vectors/{lib.ids[1]}/{mode}.png")
        assert t.status_code == 200 and read_png(t.content).shape == (SIZE, SIZE, 3)
    full, grid = (read_png(client.get(f"/api/vectors/1/{m}.png").content) for m in ("full", "grid"))
    assert not np.array_equal(full, grid)
    assert client.get("/api/vectors/1/full.png").content == client.get("/api/vectors/1/full.png").content  # cached
    assert client.get("/api/vectors?library=library-x2").json()["layer"] == "dec.x2"
    bad = client.get("/api/vectors/999/full.png")
    assert bad.status_code == 400 and "vector id 999 is not in the library" in bad.json()["error"]
    assert client.get("/api/vectors/1/side.png").status_code == 400


def test_labels_write_library_yaml_as_the_cli_does(client, work, tmp_path):
    from datagen.cli.app import main
    from datagen.vectors import VectorLibrary

    twin = tmp_path / "twin"
    shutil.copytree(work / "library", twin)
    r = client.post("/api/vectors/label", json={"ids": [3, 4], "label": "necrosis"})
    assert r.status_code == 200 and r.json()["labels"] == ["necrosis"]
    assert main(["vectors", "label", str(twin), "--name", "necrosis", "--ids", "3", "4"]) == 0
    assert (work / "library" / "library.yaml").read_text() == (twin / "library.yaml").read_text()
    # rename a label, then clear it
    r = client.post("/api/vectors/rename", json={"old": "necrosis", "new": "necrotic"})
    assert r.json()["ids"] == [3, 4] and VectorLibrary.load(work / "library").record(4).label == "necrotic"
    assert client.post("/api/vectors/label", json={"ids": [4], "label": None}).status_code == 200
    lib = VectorLibrary.load(work / "library")
    assert (lib.record(3).label, lib.record(4).label) == ("necrotic", None)
    assert [x["name"] for x in client.get("/api/state").json()["libraries"]] == ["library", "library-x2"]
    assert [x["label"] for x in client.get("/api/vectors").json()["vectors"][3:5]] == ["necrotic", None]
    for body, msg in [({"ids": [999], "label": "x"}, "vector id 999"), ({"ids": [], "label": "x"}, "ids:"),
                      ({"ids": [1], "label": "a\nb"}, "single-line"), ({"old": "nothing", "new": "x"}, "labelled 'nothing'")]:
        url = "/api/vectors/rename" if "old" in body else "/api/vectors/label"
        r = client.post(url, json=body)
        assert r.status_code == 400 and msg in r.json()["error"]


def test_concurrent_label_requests_lose_nothing(client, work):
    """Every request reads, changes and rewrites library.yaml; the lock keeps each one's change."""
    from datagen.vectors import VectorLibrary

    ids = VectorLibrary.load(work / "library").ids

    def label(i: int) -> int:
        return client.post("/api/vectors/label", json={"ids": [i], "label": f"name-{i}"}).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(label, ids))
    assert codes == [200] * len(ids)
    lib = VectorLibrary.load(work / "library")
    assert {r.id: r.label for r in lib.records} == {i: f"name-{i}" for i in ids}
    assert not [p for p in (work / "library").iterdir() if p.name.startswith(".")]  # no temporary files left


def test_label_changes_reach_the_recipe(work, tmp_path):
    """A class painted by label resolves to the vectors labelled now; a library on its own gets a class per label."""
    c = client_for(work / "library", tmp_path / "out")
    st = c.get("/api/state").json()
    assert st["error"] is None and st["mode"] == "library"
    assert [x["name"] for x in st["classes"] if not x["keep"]] == ["vectors"]  # no labels, no clusters: one class
    assert c.post("/api/vectors/label", json={"ids": [0, 1], "label": "gland"}).status_code == 200
    assert c.post("/api/vectors/label", json={"ids": [2], "label": "fat"}).status_code == 200
    st = c.get("/api/state").json()
    assert [(x["name"], x["id"]) for x in st["classes"] if not x["keep"]] == [("fat", 3), ("gland", 2)]  # ids kept
    assert st["eraser"] == 0
    fat = next(x["id"] for x in st["classes"] if x["name"] == "fat")
    r = c.post("/api/render", content=stroke_map(st["eraser"], fat, st["size"][0]).tobytes())
    assert r.status_code == 200, r.text


def test_exports_round_trip_through_user_mask(client, work, tmp_path):
    from datagen.generate import build_renderer, load_recipe_model
    from datagen.recipe import load_recipe

    painted = stroke_map(0)
    painted[44:60, 40:60] = 2
    q = "?index=2"
    layout = client.post(f"/api/export/layout.png{q}", content=painted.tobytes())
    assert layout.headers["content-disposition"] == 'attachment; filename="studio-000002-layout.png"'
    assert np.array_equal(read_png(layout.content), painted)
    image = read_png(client.post(f"/api/export/image.png{q}", content=painted.tobytes()).content)
    assert np.array_equal(image, read_png(client.post(f"/api/render{q}", content=painted.tobytes()).content))
    mask = read_png(client.post(f"/api/export/mask.png{q}", content=painted.tobytes()).content)
    assert np.array_equal(mask, np.where(painted == 0, 255, painted))  # mask: layout; the eraser is ignore (255)
    z = zipfile.ZipFile(io.BytesIO(client.post(f"/api/export/pair.zip{q}", content=painted.tobytes()).content))
    assert sorted(z.namelist()) == [f"studio-000002/{n}" for n in ("image.png", "layout.png", "mask.png", "recipe.yaml")]
    z.extractall(tmp_path / "zip")
    folder = tmp_path / "zip" / "studio-000002"
    assert np.array_equal(read_png((folder / "image.png").read_bytes()), image)
    # the exported recipe paints the exported map: a kind: mask layout of this very map
    recipe = load_recipe(folder / "recipe.yaml")
    assert recipe.layout == {"kind": "mask", "path": "layout.png"}
    r = build_renderer(recipe, load_recipe_model(recipe, "cpu"), 0)
    assert np.array_equal(r.make_layout(5), painted)
    images, masks = r.render_pairs([2], painted[None])
    assert np.array_equal(images[0], image) and np.array_equal(masks[0], mask)
    text = client.post(f"/api/export/recipe.yaml{q}", content=painted.tobytes()).text
    assert "kind: mask, path: studio-000002-layout.png" in text and "keep: true" in text
    assert client.post(f"/api/export/nope.txt{q}", content=painted.tobytes()).status_code == 400


def test_rendered_mask_export_with_a_keep_class(work, tmp_path):
    """The tiny recipe has a keep class (the eraser paints it) and mask: rendered (fitted on the first export)."""
    c = client_for(work / "recipe.yaml", tmp_path / "out")
    st = c.get("/api/state").json()
    assert st["eraser"] == 0 and not any(x.get("eraser") for x in st["classes"]) and st["mask_mode"] == "rendered"
    mask = read_png(c.post("/api/export/mask.png", content=stroke_map(0).tobytes()).content)
    assert set(np.unique(mask)) <= {1, 255} and (mask[24:32, 12:36] == 1).mean() > 0.9 and (mask[48:, :] == 255).all()


def test_save_writes_inside_the_output_folder_only(client, tmp_path):
    body = stroke_map(0).tobytes()
    r = client.post("/api/save?name=runs/first", content=body)
    assert r.status_code == 200
    files = [Path(f) for f in r.json()["files"]]
    assert sorted(f.name for f in files) == ["image.png", "layout.png", "mask.png", "recipe.yaml"]
    assert all(f.parent == (tmp_path / "out" / "runs" / "first").resolve() for f in files)
    outside = tmp_path / "outside"
    for name in ("../outside", str(outside), "runs/../../outside", "/etc/evil", "~/evil", ""):
        r = client.post("/api/save", params={"name": name}, content=body)
        assert r.status_code == 403, name
        assert "outside" in r.json()["error"] or "relative path" in r.json()["error"] or "absolute" in r.json()["error"]
    assert not outside.exists()
    (tmp_path / "out" / "link").symlink_to(tmp_path)  # a link out of the folder is outside too
    assert client.post("/api/save?name=link/x", content=body).status_code == 403


def test_library_paths_cannot_leave_the_library_root(client, work):
    for name in ("../", "../../etc", str(work / "library"), "/etc", "library/../../x"):
        for r in (client.get("/api/vectors", params={"library": name}),
                  client.get("/api/vectors/1/full.png", params={"library": name}),
                  client.post("/api/vectors/label", json={"library": name, "ids": [1], "label": "x"}),
                  client.post("/api/render", params={"library": name}, content=stroke_map(0).tobytes())):
            assert r.status_code == 403, (name, r.status_code, r.text)
    assert client.get("/api/vectors", params={"library": "model"}).status_code == 400  # inside, but not a library


def test_resolve_within(tmp_path):
    assert resolve_within(tmp_path, "a/b", "x") == (tmp_path / "a" / "b").resolve()
    for bad in ("..", "../a", "/abs", "a/../../b", "", "a\x00b"):
        with pytest.raises(Exception, match="x: "):
            resolve_within(tmp_path, bad, "x")


def test_requests_must_come_from_this_machine_and_site(client):
    assert client.get("/api/state", headers={"host": "evil.example"}).status_code == 400  # DNS rebinding
    r = client.post("/api/vectors/label", json={"ids": [1], "label": "x"}, headers={"origin": "http://evil.example"})
    assert r.status_code == 403 and "cross-origin" in r.json()["error"]
    assert client.post("/api/vectors/label", json={"ids": [1], "label": "x"},
                       headers={"origin": "http://127.0.0.1"}).status_code == 200


def test_page_and_static_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "studio.js" in page.text
    for f in ("studio.js", "studio.css"):
        assert client.get(f"/static/{f}").status_code == 200
    assert client.get("/static/../app.py").status_code == 404


def test_bad_recipe_and_library_show_the_cli_message(work, tmp_path, capsys):
    from datagen.cli.app import main

    bad = work / "bad.yaml"
    bad.write_text((work / "nokeep.yaml").read_text().replace('"#1f77b4"', '"blue"'))
    c = client_for(bad, tmp_path / "out")
    st = c.get("/api/state").json()
    assert st["error"] and "classes" not in st
    assert c.post("/api/render", content=b"x").json()["error"] == st["error"]
    assert main(["preview", str(bad), "--out", str(tmp_path / "p.png")]) == 2
    assert capsys.readouterr().err.strip() == f"datagen preview: error: {st['error']}"
    assert main(["studio", str(bad), "--check"]) == 2
    assert capsys.readouterr().err.strip() == f"datagen studio: error: {st['error']}"
    # fixed on disk: the page's Reload picks it up
    bad.write_text((work / "nokeep.yaml").read_text())
    assert c.post("/api/reload").json()["error"] is None
    # a folder that is not a vector library
    empty = tmp_path / "empty"
    empty.mkdir()
    st = client_for(empty, tmp_path / "out").get("/api/state").json()
    assert main(["vectors", "label", str(empty), "--name", "x", "--ids", "0"]) == 2
    assert capsys.readouterr().err.strip() == f"datagen vectors label: error: {st['error']}"
    assert "not a vector library" in st["error"]


def test_cli_check(work, capsys):
    from datagen.cli.app import main

    assert main(["studio", str(work / "nokeep.yaml"), "--check", "--device", "cpu"]) == 0
    assert "3 classes at 64x64 px, layer dec.x4, libraries: library, library-x2" in capsys.readouterr().out
    assert main(["studio", str(work / "nokeep.yaml"), "--check", "--port", "70000"]) == 2
    assert "--port: must be 0..65535" in capsys.readouterr().err


# ---- the page in a real browser -----------------------------------------------------------------

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
#: How far (px) a change of the built-in model's dec.x16 cells can reach in the image: the decoder
#: after it (a bilinear 2x upsampling and two 3x3 convolutions at each of strides 8, 4, 2, 1) sees
#: about 50 px around a cell; measured up to 51 px. Beyond this distance a render must not change.
RECEPTIVE_FIELD = 56


@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail(f"the studio's browser test needs {CHROMIUM} and {CHROMEDRIVER}: "
                    "apt-get install -y chromium chromium-driver (as .ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1400,900", "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_script_timeout(120)
    yield driver
    driver.quit()


class Server:
    """uvicorn serving an app on 127.0.0.1 on a free port, in a thread."""

    def __init__(self, app) -> None:
        import uvicorn

        self.sock = bind_socket("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "Server":
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the studio server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


def demo_recipe(tmp_path: Path, mask: str = "layout") -> Path:
    """recipes/tissue-small-demo.yaml (built-in model, 256 px) with the library's absolute path, another mask
    mode and no ignore strip at boundaries (the mask is then exactly what was painted)."""
    import re

    text = (ROOT / "recipes" / "tissue-small-demo.yaml").read_text()
    text = text.replace("library: ../vector_libraries/tissue-small", f"library: {ROOT / 'vector_libraries' / 'tissue-small'}")
    text, n = re.subn(r"^paint: .*$", f"paint: {{soft_boundary: 0.0, mask: {mask}}}", text, flags=re.M)
    assert n == 1
    p = tmp_path / "demo.yaml"
    p.write_text(text)
    return p


def wait_idle(driver, renders_above: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while True:
        n, idle, err = driver.execute_script(
            "return [window.studio.renders, window.studio.idle(), document.getElementById('error').hidden ? null : "
            "document.getElementById('error-text').textContent]")
        assert err is None, err
        if n > renders_above and idle:
            return n
        assert time.monotonic() < deadline, f"no render after {timeout} s ({n} renders)"
        time.sleep(0.05)


def drag(driver, points: list[tuple[float, float]], brush: int) -> None:
    """Paint a stroke with the mouse through ``points`` (label-map pixels) with brush size ``brush``."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.mouse_button import MouseButton

    driver.execute_script("const b = document.getElementById('brush'); b.value = arguments[0];"
                          "b.dispatchEvent(new Event('input'));", brush)
    left, top, width, height, h, w = driver.execute_script(
        "const r = document.getElementById('paint').getBoundingClientRect(); const s = window.studio.state().size;"
        "return [r.left, r.top, r.width, r.height, s[0], s[1]]")
    to_view = [(left + (x + 0.5) * width / w, top + (y + 0.5) * height / h) for x, y in points]
    ab = ActionBuilder(driver)
    ab.pointer_action.move_to_location(int(to_view[0][0]), int(to_view[0][1]))
    ab.pointer_action.pointer_down(MouseButton.LEFT)
    for (x0, y0), (x1, y1) in zip(to_view, to_view[1:]):
        for t in np.linspace(0, 1, 9)[1:]:
            ab.pointer_action.move_to_location(int(x0 + t * (x1 - x0)), int(y0 + t * (y1 - y0)))
    ab.pointer_action.pointer_up(MouseButton.LEFT)
    ab.perform()
    ActionChains(driver).reset_actions()


def page_png(driver, script: str) -> np.ndarray:
    data = driver.execute_async_script(f"const done = arguments[arguments.length - 1]; ({script}).then(done, e => done('ERR ' + e))")
    assert data and not data.startswith("ERR"), data
    return read_png(base64.b64decode(data))


def segment_distance(shape, a, b) -> np.ndarray:
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]] + 0.5
    (ax, ay), (bx, by) = a, b
    t = np.clip(((xx - ax) * (bx - ax) + (yy - ay) * (by - ay)) / max((bx - ax) ** 2 + (by - ay) ** 2, 1e-9), 0, 1)
    return np.hypot(xx - (ax + t * (bx - ax)), yy - (ay + t * (by - ay)))


def test_paint_a_stroke_in_the_browser(browser, tmp_path):
    """Mouse stroke -> live render: the image changes where painted and nowhere beyond the decoder's
    reach; the exported map and mask are the stroke."""
    from scipy import ndimage

    app = create_app(demo_recipe(tmp_path, mask="cells"), out_dir=tmp_path / "out", device="cpu")
    with Server(app) as server:
        browser.get(server.url)
        n = wait_idle(browser, 0)  # the first render: nothing painted, the generator's own image
        st = browser.execute_script("return window.studio.state()")
        assert st["size"] == [256, 256] and st["layer_size"] == [16, 16]
        before = page_png(browser, "window.studio.imageBase64()")
        tumor = next(c["id"] for c in st["classes"] if c["name"] == "tumor")
        browser.execute_script(f"document.querySelector('.swatch[data-cls=\"{tumor}\"]').click()")
        a, b, brush = (40, 48), (136, 64), 32
        drag(browser, [a, b], brush)
        wait_idle(browser, n)
        after = page_png(browser, "window.studio.imageBase64()")
        layout = page_png(browser, "window.studio.exportBase64('layout.png')")
        mask = page_png(browser, "window.studio.exportBase64('mask.png')")

    # the exported map is the stroke: a capsule of radius brush/2 around the mouse path (1.5 px for the
    # mouse's whole-pixel positions), the rest unpainted
    dist = segment_distance(layout.shape, a, b)
    assert (layout[dist <= brush / 2 - 1.5] == tumor).all()
    assert (layout[dist > brush / 2 + 1.5] == st["eraser"]).all()
    assert set(np.unique(layout)) == {tumor, st["eraser"]}
    # mask: cells writes the painted layer cells (a cell is painted when its centre pixel is: the
    # centred nearest resize), unpainted ones as the ignore value
    cells = layout[8::16, 8::16] == tumor
    painted = np.kron(cells, np.ones((16, 16), bool))
    assert np.array_equal(mask, np.where(painted, tumor, 255))
    # the render changed in the painted cells, and not beyond the decoder's receptive field
    diff = np.abs(after.astype(int) - before.astype(int)).max(-1)
    assert cells.sum() >= 8
    near = ndimage.distance_transform_edt(~painted)
    assert diff[painted].mean() > 20, diff[painted].mean()
    assert diff[near > RECEPTIVE_FIELD].max() == 0
    assert (near > RECEPTIVE_FIELD).mean() > 0.3  # a real part of the image was checked
    assert diff[near <= 24].sum() >= 0.9 * diff.sum()  # the change is concentrated at the stroke


def test_vectors_tab_labels_in_the_browser(browser, work, tmp_path):
    """The Vectors tab shows thumbnails; selecting cards and typing a label writes library.yaml."""
    import os

    from selenium.webdriver.common.by import By

    from datagen.vectors import VectorLibrary

    app = create_app(work / "recipe.yaml", out_dir=tmp_path / "out", device="cpu")
    with Server(app) as server:
        browser.get(server.url)
        wait_idle(browser, 0)
        browser.find_element(By.CSS_SELECTOR, ".tab[data-tab=vectors]").click()
        deadline = time.monotonic() + 60
        while len(browser.find_elements(By.CSS_SELECTOR, ".card")) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        cards = browser.find_elements(By.CSS_SELECTOR, ".card")
        cards[0].click()
        cards[2].click()
        browser.find_element(By.ID, "v-label").send_keys("necrosis")
        browser.find_element(By.ID, "v-assign").click()
        while "necrosis" not in browser.find_element(By.ID, "f-label").text:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        while not browser.execute_script(
                "return Array.from(document.querySelectorAll('.card img')).slice(0, 4).every(i => i.complete)"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        loaded = browser.execute_script(
            "return Array.from(document.querySelectorAll('.card img')).slice(0, 4).map(i => i.naturalWidth)")
        if os.environ.get("DATAGEN_STUDIO_SCREENSHOT") == "1":
            browser.save_screenshot(str(tmp_path.parent / "studio-vectors.png"))
    lib = VectorLibrary.load(work / "library")
    ids = lib.ids
    assert [r.id for r in lib.records if r.label == "necrosis"] == [ids[0], ids[2]]
    assert loaded == [SIZE] * 4


def test_screenshot_for_the_docs(browser, tmp_path, monkeypatch):
    """The demo recipe on the built-in model after a few strokes; with DATAGEN_STUDIO_SCREENSHOT=1 it is
    saved as docs/images/studio.png (the picture in docs/studio.md)."""
    import os

    monkeypatch.chdir(ROOT)  # the page shows the paths as a user types them
    app = create_app("recipes/tissue-small-demo.yaml", out_dir="studio-out", device="cpu")  # (Save is not clicked)
    with Server(app) as server:
        browser.set_window_size(1400, 1000)
        browser.get(server.url)
        n = wait_idle(browser, 0)
        st = browser.execute_script("return window.studio.state()")
        ids = {c["name"]: c["id"] for c in st["classes"]}
        strokes = [("stroma", [(0, 150), (70, 120), (150, 150), (256, 120)], 96),
                   ("tumor", [(60, 40), (110, 70), (170, 50)], 56),
                   ("dense", [(200, 210), (230, 240)], 40),
                   ("background", [(215, 20), (250, 60)], 48)]
        for name, pts, brush in strokes:
            browser.execute_script(f"document.querySelector('.swatch[data-cls=\"{ids[name]}\"]').click()")
            drag(browser, pts, brush)
            n = wait_idle(browser, n)
        browser.execute_script("const g = document.getElementById('grid'); g.checked = true; g.dispatchEvent(new Event('change'));")
        browser.execute_script("document.querySelector('.swatch[data-cls=\"%d\"]').click()" % ids["tumor"])
        shot = tmp_path / "studio.png"
        assert browser.save_screenshot(str(shot))
    browser.set_window_size(1400, 900)
    img = np.asarray(Image.open(shot))
    assert img.shape[0] >= 700 and img.shape[1] >= 1200 and img.std() > 20
    if os.environ.get("DATAGEN_STUDIO_SCREENSHOT") == "1":
        shutil.copyfile(shot, ROOT / "docs" / "images" / "studio.png")


def test_benchmark_quick_prints_json(monkeypatch, tmp_path, capsys):
    """benchmarks/bench_studio.py --quick runs (tiny model) and prints its figures as JSON."""
    import importlib
    import sys

    import torch

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    monkeypatch.setenv("DATAGEN_BENCH_CACHE", str(tmp_path / "bench-cache"))
    threads = torch.get_num_threads()
    try:
        mod = importlib.import_module("bench_studio")
        result = mod.main(["--quick", "--threads", "1", "--json-out", str(tmp_path / "r.json")])
    finally:
        torch.set_num_threads(threads)
        sys.modules.pop("bench_studio", None)
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "r.json").read_text()) and printed["requests"] == result["requests"] == 4
    assert printed["latency_ms"]["median"] >= printed["server_model_ms"]["median"] > 0


def test_page_tools_and_errors_in_the_browser(browser, work, tmp_path):
    """Recipe layout, new noise, fill and eraser in the page; a bad recipe shows the CLI's line, and Reload
    picks up the fixed file."""
    from selenium.webdriver.common.by import By

    bad = work / "bad.yaml"
    good_text = (work / "nokeep.yaml").read_text()
    bad.write_text(good_text.replace("size: [64, 64]", "size: [64, 60]"))
    app = create_app(bad, out_dir=tmp_path / "out", device="cpu")
    with Server(app) as server:
        browser.get(server.url)
        deadline = time.monotonic() + 30
        while browser.find_element(By.ID, "error").get_attribute("hidden") is not None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        err = app.state.studio.error
        assert "size" in err and browser.find_element(By.ID, "error-text").text == f"datagen studio: error: {err}"
        bad.write_text(good_text)
        browser.find_element(By.ID, "reload").click()
        while browser.find_element(By.ID, "error").get_attribute("hidden") is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        n = wait_idle(browser, 0)

        def labels() -> np.ndarray:
            return np.array(browser.execute_script("return Array.from(window.studio.labels())"), np.uint8).reshape(SIZE, SIZE)

        browser.find_element(By.ID, "random").click()
        n = wait_idle(browser, n)
        assert np.array_equal(labels(), app.state.studio.random_layout(0))  # the recipe layout's map of index 0
        browser.find_element(By.ID, "noise").click()
        n = wait_idle(browser, n)
        assert browser.find_element(By.ID, "index").get_attribute("value") == "1"
        assert "index 1" in browser.find_element(By.ID, "render-info").text
        browser.find_element(By.CSS_SELECTOR, ".tool[data-tool=eraser]").click()
        drag(browser, [(5, 5), (40, 5)], 6)
        n = wait_idle(browser, n)
        assert (labels()[3:7, 8:38] == 0).all()
        browser.find_element(By.CSS_SELECTOR, ".tool[data-tool=fill]").click()
        browser.execute_script("document.querySelector('.swatch[data-cls=\"2\"]').click()")
        browser.find_element(By.CSS_SELECTOR, ".tool[data-tool=fill]").click()
        drag(browser, [(20, 5)], 1)  # a click on the erased strip fills it
        wait_idle(browser, n)
        assert (labels()[3:7, 8:38] == 2).all()
