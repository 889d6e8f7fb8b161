"""The activation-vector loop: grid geometry, extraction, visualisation, tileability, library, reports."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Sequence

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from datagen.errors import ConfigError, DatagenError
from datagen.features import ModuleFeatureExtractor
from datagen.models import DigipathGenerator, DigipathUNet, Generator, LayerHook, LayerInfo, UNetConfig
from datagen.paint import grid_mask
from datagen.vectors import (
    VectorLibrary,
    VectorRecord,
    cluster_library,
    cluster_vectors,
    contact_sheet,
    default_threshold,
    extract_vectors,
    grid_mask_at_image,
    html_report,
    mask_weights,
    rank_tileable,
    regenerate_image,
    sheet_size,
    tileability_scores,
    vector_caption,
    visualize,
)
from datagen.vectors.visualize import seed_inputs

SIZE = 48  # dec.x4 of the tiny UNet is 12x12 here


@pytest.fixture(scope="module")
def gen() -> DigipathGenerator:
    torch.manual_seed(0)
    cfg = UNetConfig(channels=(8, 16, 16, 16), noise_channels=4, default_layer="dec.x4")
    return DigipathGenerator(DigipathUNet(cfg))


@pytest.fixture(scope="module")
def cond_gen() -> DigipathGenerator:
    torch.manual_seed(1)
    cfg = UNetConfig(channels=(8, 16, 16, 16), noise_channels=4, cond_dim=6, cond_channels=4, default_layer="dec.x4")
    return DigipathGenerator(DigipathUNet(cfg), conditioning=torch.randn(20, 6))


# -- grid geometry (grid_mask itself: tests/test_paint.py) --------------------------
def test_grid_mask_at_image_is_nearest_upsample(gen: DigipathGenerator) -> None:
    m = grid_mask_at_image(gen, "dec.x4", SIZE, 2)
    assert m.shape == (SIZE, SIZE)
    layer = grid_mask(12, 12, 2)
    assert torch.equal(m, layer.repeat_interleave(4, 0).repeat_interleave(4, 1))


# -- extraction ---------------------------------------------------------------------
def test_extract_records_and_determinism(gen: DigipathGenerator) -> None:
    a = extract_vectors(gen, "dec.x4", 5, size=SIZE, seed=3, per_image=4, batch_size=2, progress=False, model_spec="spec:x")
    b = extract_vectors(gen, "dec.x4", 5, size=SIZE, seed=3, per_image=4, batch_size=5, progress=False, model_spec="spec:x")
    assert a.vectors.shape == (20, 16) and a.ids == list(range(20))
    assert torch.allclose(a.vectors, b.vectors, atol=1e-5) and a.records == b.records
    assert a.model == "spec:x" and a.layer == "dec.x4" and a.image_size == (SIZE, SIZE)
    assert a.extraction["seed"] == 3 and a.extraction["per_image"] == 4 and a.extraction["dropped"] == 0
    # positions are distinct within an image and the vector is that pixel of that image's layer
    rec = a.records[6]
    assert len({(r.y, r.x) for r in a.records if r.image == rec.image}) == 4
    from datagen.seeding import sample_torch_generator

    inputs = gen.sample_inputs([sample_torch_generator(3, rec.image, "extract")], (SIZE, SIZE))
    with torch.no_grad(), LayerHook(gen.module, "dec.x4") as hook:
        gen.forward(inputs)
    assert torch.allclose(hook.original[0, :, rec.y, rec.x], a.vectors[6], atol=1e-5)
    assert regenerate_image(gen, a, 6).shape == (3, SIZE, SIZE)
    c = extract_vectors(gen, "dec.x4", 5, size=SIZE, seed=4, per_image=4, progress=False)
    assert not torch.allclose(a.vectors, c.vectors)


def test_extract_drops_copies_of_a_layer_that_repeats_across_the_image() -> None:
    # builtin:tissue-small's dec.x16 is one vector repeated over each image (its encoder averages
    # the noise away): 3 pixels of 2 images are 2 vectors, not 6
    from datagen.models import load_generator

    builtin = load_generator("builtin:tissue-small", "cpu")
    lib = extract_vectors(builtin, "dec.x16", 2, size=64, seed=0, per_image=3, progress=False)
    assert len(lib) == 2 and [r.image for r in lib.records] == [0, 1] and lib.ids == [0, 1]
    assert lib.extraction["dropped"] == 4 and lib.extraction["dedupe"] == 0.999
    every = extract_vectors(builtin, "dec.x16", 2, size=64, seed=0, per_image=3, progress=False, dedupe=None)
    assert len(every) == 6 and every.extraction["dropped"] == 0
    assert torch.equal(lib.vectors[1], every.vectors[3])  # the first pixel of image 1 is the one kept
    with pytest.raises(DatagenError, match="dedupe"):
        extract_vectors(builtin, "dec.x16", 1, size=64, dedupe=0.0, progress=False)


def test_extract_all_pixels_and_errors(cond_gen: DigipathGenerator) -> None:
    lib = extract_vectors(cond_gen, None, 2, size=SIZE, per_image="all", progress=False)
    assert lib.vectors.shape == (2 * 12 * 12, 16) and lib.layer == "dec.x4"
    assert {(r.y, r.x) for r in lib.records if r.image == 1} == {(y, x) for y in range(12) for x in range(12)}
    with pytest.raises(DatagenError, match="at most 144"):
        extract_vectors(cond_gen, "dec.x4", 1, size=SIZE, per_image=145, progress=False)
    with pytest.raises(DatagenError, match="no layer"):
        extract_vectors(cond_gen, "dec.x99", 1, size=SIZE, progress=False)
    with pytest.raises(DatagenError, match="multiple of 8"):
        extract_vectors(cond_gen, "dec.x4", 1, size=50, progress=False)


# -- visualisation -------------------------------------------------------------------
class _Capture:
    """Forward pre-hook on the module that consumes dec.x4: sees the layer after the edit."""

    def __init__(self, module: nn.Module) -> None:
        self.batches: list[torch.Tensor] = []
        self.handle = module.register_forward_pre_hook(lambda m, args: self.batches.append(args[0].detach().clone()))

    def close(self) -> torch.Tensor:
        self.handle.remove()
        return torch.cat(self.batches)


def test_full_replace_makes_layer_constant(gen: DigipathGenerator) -> None:
    vecs = torch.randn(3, 16)
    cap = _Capture(gen.module.dec["x2"])
    imgs = visualize(gen, vecs, "dec.x4", mode="full", seeds=[0, 5], size=SIZE, batch_size=4, progress=False)
    seen = cap.close()
    assert imgs.shape == (3, 2, 3, SIZE, SIZE) and imgs.dtype == torch.uint8
    assert seen.shape == (6, 16, 12, 12)
    for k in range(6):  # vector-major (vector, seed) order
        v = vecs[k // 2]
        assert torch.allclose(seen[k], v[:, None, None].expand(16, 12, 12))


def test_grid_replace_changes_only_block_pixels(gen: DigipathGenerator) -> None:
    vecs = torch.randn(2, 16)
    inputs = seed_inputs(gen, [7], (SIZE, SIZE))[0]
    with torch.no_grad(), LayerHook(gen.module, "dec.x4") as hook:
        gen.forward(inputs)
    original = hook.original[0]
    mask = grid_mask(12, 12, 2)
    for background in (None, torch.full((16,), 0.25)):
        cap = _Capture(gen.module.dec["x2"])
        visualize(gen, vecs, "dec.x4", mode="grid", grid=2, seeds=[7], size=SIZE, background=background, progress=False)
        seen = cap.close()
        for k in range(2):
            assert torch.allclose(seen[k][:, mask], vecs[k][:, None].expand(16, int(mask.sum())))
            outside = original[:, ~mask] if background is None else background[:, None].expand(16, int((~mask).sum()))
            assert torch.allclose(seen[k][:, ~mask], outside, atol=1e-5)


def test_visualize_columns_comparable_and_batch_independent(cond_gen: DigipathGenerator) -> None:
    v = torch.randn(1, 16)
    vecs = torch.cat([v, torch.randn(1, 16), v])
    a = visualize(cond_gen, vecs, "dec.x4", mode="grid", seeds=3, size=SIZE, batch_size=1, progress=False, dtype="float")
    b = visualize(cond_gen, vecs, "dec.x4", mode="grid", seeds=3, size=SIZE, batch_size=7, progress=False, dtype="float")
    assert a.shape == (3, 3, 3, SIZE, SIZE) and a.dtype == torch.float32
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(a[0], a[2], atol=1e-6)  # same vector, same seeds -> same images
    assert not torch.allclose(a[0, 0], a[0, 1])  # different seeds differ


def test_visualize_rejects_grid_without_blocks(gen: DigipathGenerator) -> None:
    with pytest.raises(DatagenError, match="grid of size 5"):
        visualize(gen, torch.randn(1, 16), "dec.x4", mode="grid", grid=5, size=16, progress=False)  # 4x4 layer
    with pytest.raises(DatagenError, match="channels"):
        visualize(gen, torch.randn(1, 15), "dec.x4", size=SIZE, progress=False)


# -- tileability ------------------------------------------------------------------
class ToyNet(nn.Module):
    """A hand-made 'generator'. ``feat`` (2 channels, stride 4) is the painted layer.

    Channel 0 is a *texture*: every layer pixel draws a fixed 4x4 checker scaled by its value,
    so its rendering never depends on the neighbours. Channel 1 *needs contrast*: it is drawn
    through an edge detector (|pixel - mean of its 4 neighbours|, plus a faint flat tint), so a
    constant field of it draws a flat image while isolated blocks of it draw stripes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.feat = nn.AvgPool2d(4)
        checker = torch.tensor([[1.0, -1.0] * 2, [-1.0, 1.0] * 2] * 2)
        stripes = torch.tensor([[1.0, 1.0, -1.0, -1.0]] * 4)
        self.register_buffer("checker", checker)
        self.register_buffer("stripes", stripes)
        lap = torch.tensor([[0.0, -0.25, 0.0], [-0.25, 1.0, -0.25], [0.0, -0.25, 0.0]])
        self.register_buffer("lap", lap[None, None])

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        a = self.feat(noise)
        h, w = a.shape[-2:]
        tex = F.interpolate(a[:, :1], scale_factor=4, mode="nearest") * self.checker.repeat(h, w)
        edge = F.conv2d(F.pad(a[:, 1:2], (1, 1, 1, 1), mode="replicate"), self.lap).abs()
        con = F.interpolate(edge, scale_factor=4, mode="nearest") * self.stripes.repeat(h, w)
        return torch.tanh(torch.cat([tex, con, 0.5 * (tex - con) + 0.1 * F.interpolate(a[:, 1:2], scale_factor=4)], dim=1))


class ToyGenerator(Generator):
    name = "toy"

    def __init__(self) -> None:
        self.module = ToyNet().eval()

    @property
    def default_layer(self) -> str:
        return "feat"

    @property
    def size_multiple(self) -> int:
        return 4

    def layers(self) -> list[LayerInfo]:
        return [LayerInfo("feat", 2, 4)]

    def sample_inputs(self, generators: Sequence[torch.Generator], size: tuple[int, int]) -> dict[str, torch.Tensor]:
        return {"noise": torch.cat([torch.randn((1, 2, *size), generator=g) for g in generators])}

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.module(inputs["noise"])


def _random_extractor() -> ModuleFeatureExtractor:
    torch.manual_seed(123)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.ReLU(), nn.Conv2d(16, 16, 3, stride=2, padding=1, bias=False))
    return ModuleFeatureExtractor(net, ["2"], normalize=lambda x: x)


def test_tileability_prefers_uniform_texture_over_contrast_vector() -> None:
    toy = ToyGenerator()
    uniform, contrast = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    vecs = torch.stack([contrast, uniform, 0.5 * uniform])
    scores = tileability_scores(toy, vecs, "feat", extractor=_random_extractor(), seeds=3, size=32,
                                batch_size=4, progress=False)
    assert scores.shape == (3,)
    assert scores[1] > 0.95 and scores[2] > 0.95
    assert scores[1] > scores[0] + 0.3, scores
    assert rank_tileable(scores, top=2).tolist() == [1, 2] or rank_tileable(scores, top=2).tolist() == [2, 1]
    assert rank_tileable(scores, threshold=0.9).tolist().count(0) == 0
    # batch composition does not matter
    again = tileability_scores(toy, vecs[[1]], "feat", extractor=_random_extractor(), seeds=3, size=32,
                               batch_size=1, progress=False)
    assert torch.allclose(again, scores[1:2], atol=1e-5)


def test_tileability_rejects_layer_too_small_for_grid2() -> None:
    with pytest.raises(DatagenError, match="grid of size 2 needs at least 3x3"):
        tileability_scores(ToyGenerator(), torch.randn(1, 2), "feat", extractor=_random_extractor(), size=8,
                           progress=False)


def test_mask_weights_are_coverage_fractions() -> None:
    m = grid_mask(12, 12, 2)  # layer at stride 4 of a 48-px image
    same = mask_weights(m, (48, 48), (12, 12))
    assert torch.equal(same, m.float())
    fine = mask_weights(m, (48, 48), (24, 24))  # feature map finer than the layer: 0/1 weights
    assert torch.equal(fine, m.float().repeat_interleave(2, 0).repeat_interleave(2, 1))
    coarse = mask_weights(m, (48, 48), (6, 6))  # coarser: fraction of each 8x8 cell covered
    assert coarse[0, 0] == pytest.approx(4 / 4) and coarse[0, 1] == pytest.approx(2 / 4)
    assert 0 < coarse.min() <= coarse.max() <= 1


def test_rank_and_default_threshold() -> None:
    scores = torch.tensor([0.2, 0.95, 0.25, 0.97, 0.3, 0.99, float("nan")])
    t = default_threshold(scores)
    assert 0.3 < t <= 0.95
    assert rank_tileable(scores).tolist() == [5, 3, 1]
    assert rank_tileable(scores, threshold=0.0).tolist() == [5, 3, 1, 4, 2, 0]
    assert rank_tileable(scores, top=2).tolist() == [5, 3]


def test_default_extractor_smoke(gen: DigipathGenerator) -> None:
    scores = tileability_scores(gen, torch.randn(2, 16), "dec.x4", seeds=1, size=64, progress=False)
    assert scores.shape == (2,) and torch.isfinite(scores).all() and (scores <= 1.0001).all()


# -- library ----------------------------------------------------------------------
def _library(n: int = 6, c: int = 16) -> VectorLibrary:
    g = torch.Generator().manual_seed(0)
    recs = [VectorRecord(id=10 + i, image=i // 2, y=i, x=2 * i, seed=0) for i in range(n)]
    return VectorLibrary(torch.randn(n, c, generator=g), recs, model="builtin:test", layer="dec.x4",
                         image_size=(SIZE, SIZE), extraction={"seed": 0, "num_images": 3, "per_image": 2})


def test_library_round_trip(tmp_path) -> None:
    lib = _library()
    lib.set_label([11, 13], "tumor")
    lib.set_scores(torch.linspace(0, 1, 6), {"extractor": "toy", "layer": "2", "grid": 2})
    lib.set_clusters(torch.tensor([0, 1, 0, 1, 2, 2]), {"k": 3})
    lib.save(tmp_path / "lib")
    assert sorted(p.name for p in (tmp_path / "lib").iterdir()) == ["library.yaml", "vectors.safetensors"]
    back = VectorLibrary.load(tmp_path / "lib")
    assert torch.equal(back.vectors, lib.vectors)
    assert back.records == lib.records and back.ids == lib.ids
    assert back.model == "builtin:test" and back.layer == "dec.x4" and back.image_size == (SIZE, SIZE)
    assert back.tileability["extractor"] == "toy" and back.clustering == {"k": 3}
    assert back.by_label("tumor").ids == [11, 13]
    assert back.by_cluster(2).ids == [14, 15] and len(back.by_cluster(7)) == 0
    sub = back.select([15, 10])
    assert sub.ids == [15, 10] and torch.equal(sub.vectors, lib.vectors[[5, 0]])
    with pytest.raises(DatagenError, match="not in the library"):
        back.select([99])


def test_library_hand_edited_labels_and_errors(tmp_path) -> None:
    d = tmp_path / "lib"
    _library().save(d)
    yml = d / "library.yaml"
    text = yml.read_text()
    edited = re.sub(r"(\{id: 12,[^}]*label: )null", r"\1stroma", text)
    assert edited != text
    yml.write_text(edited)
    assert VectorLibrary.load(d).by_label("stroma").ids == [12]

    def broken(new: str) -> ConfigError:
        yml.write_text(new)
        with pytest.raises(ConfigError) as e:
            VectorLibrary.load(d)
        return e.value

    e = broken(text.replace("label: null}", "lable: x}", 1))
    assert e.file == str(yml) and e.field == "vectors[0].lable" and "unknown field" in str(e)
    e = broken(text.replace("channels: 16", "channels: 8"))
    assert e.field == "channels" and "16" in str(e) and "8" in str(e)
    e = broken(text.replace("{id: 13,", "{id: 99,"))
    assert "99" in str(e) and e.field == "vectors[3].id"
    e = broken(text.replace("- {id: 15,", "#- {id: 15,"))
    assert "15" in str(e) and e.field == "vectors"
    e = broken(text.replace("layer: dec.x4", "layer: [dec.x4"))
    assert "line" in str(e) and e.file == str(yml)
    with pytest.raises(ConfigError, match="not found"):
        VectorLibrary.load(tmp_path / "nope")


# -- clustering --------------------------------------------------------------------
def test_clustering_deterministic_cosine_and_prototypes_are_members() -> None:
    g = torch.Generator().manual_seed(5)
    dirs = torch.randn(3, 8, generator=g)
    x = torch.cat([dirs[k] + 0.05 * torch.randn(10, 8, generator=g) for k in range(3)])
    scale = torch.rand(30, 1, generator=g) * 5 + 0.1  # cosine: lengths must not matter
    a = cluster_vectors(x * scale, 3, seed=1)
    b = cluster_vectors(x * scale, 3, seed=1)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.prototypes, b.prototypes)
    # the three groups are recovered
    assert all(len(set(a.labels[10 * k : 10 * k + 10].tolist())) == 1 for k in range(3))
    assert len(set(a.labels.tolist())) == 3 and a.sizes.tolist() == [10, 10, 10]
    for c in range(3):  # a prototype is a real member of its cluster
        assert a.labels[a.prototypes[c]] == c
    lib = _library(30, 8)
    lib.vectors = x.clone()
    res = cluster_library(lib, 3, seed=1)
    assert [r.cluster for r in lib.records] == res.labels.tolist()
    protos = lib.clustering["prototypes"]
    assert all(lib.record(pid).cluster == k for k, pid in enumerate(protos))
    with pytest.raises(DatagenError):
        cluster_vectors(x, 31)


# -- reports ---------------------------------------------------------------------------
def test_html_report_is_self_contained(tmp_path) -> None:
    lib = _library(4)
    lib.set_scores(torch.tensor([0.5, 0.9, 0.1, 0.7]), {"extractor": "toy", "grid": 2, "threshold": 0.6})
    lib.set_label([12], "tumor <b>")
    full = torch.randint(0, 256, (4, 2, 3, 16, 16), dtype=torch.uint8)
    grid = torch.rand(4, 3, 16, 16) * 2 - 1
    p = html_report(lib, full, grid, tmp_path / "r" / "report.html")
    doc = p.read_text()
    assert doc.count("data:image/png;base64,") == 4 * 2 + 4
    assert not re.search(r"(src|href)=\"https?:", doc) and "<link" not in doc and "<script" not in doc
    for vid in lib.ids:
        assert f'id="v{vid}"' in doc
    order = [int(m) for m in re.findall(r'<tr id="v(\d+)"', doc)]
    assert order == [11, 13, 10, 12]  # sorted by score
    assert "tumor &lt;b&gt;" in doc and "builtin:test" in doc
    uri = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", doc).group(1)
    assert Image.open(io.BytesIO(base64.b64decode(uri))).size == (16, 16)
    small = html_report(lib, full, grid, tmp_path / "small.html", thumb=8).read_text()
    uri = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", small).group(1)
    assert Image.open(io.BytesIO(base64.b64decode(uri))).size == (8, 8)


def test_contact_sheet_size(tmp_path) -> None:
    lib = _library(5)
    lib.set_clusters(torch.tensor([0, 0, 1, 1, 2]))
    imgs = torch.randint(0, 256, (5, 3, 20, 24), dtype=torch.uint8)
    caps = [vector_caption(lib, i) for i in lib.ids]
    assert caps[0] == "id 10\ncluster 0"
    sheet = contact_sheet(imgs, caps, tmp_path / "s.png", columns=3)
    with Image.open(tmp_path / "s.png") as on_disk:
        assert on_disk.size == sheet.size == sheet_size(5, 3, (20, 24), 2)
    assert sheet.size == (3 * (24 + 4) + 4, 2 * (20 + 2 * 12 + 4) + 4)
    rows = contact_sheet(torch.zeros(2, 4, 3, 8, 8, dtype=torch.uint8), ["a", "b"])
    assert rows.size == sheet_size(8, 4, (8, 8), 1)


def test_library_sheet_grid_by_cluster_then_tileability(tmp_path) -> None:
    from datagen.vectors.report import library_sheet, sheet_order

    lib = _library(6)
    lib.set_scores(torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8, 1.0]), {"grid": 2, "threshold": 0.5})
    lib.set_clusters(torch.tensor([1, 0, 1, 0, 1, 2]))
    lib.set_label([13], "tumor")
    assert sheet_order(lib, lib.ids) == [3, 1, 4, 2, 0, 5]  # cluster 0 (best first), cluster 1, cluster 2
    imgs = torch.arange(6, dtype=torch.uint8)[:, None, None, None, None].mul(40).expand(6, 4, 3, 8, 8).contiguous()
    sheet = library_sheet(lib, imgs, tmp_path / "sheet.png", per_row=2)
    assert [p.name for p in tmp_path.iterdir()] == ["sheet.png"]  # written atomically, no temporary left
    with Image.open(tmp_path / "sheet.png") as on_disk:
        assert on_disk.size == sheet.size
    cell_w = 4 * 8 + 3 * 2 + 4  # four renders, a wider gap between full and grid replace
    assert sheet.width == 2 * 4 + 2 * cell_w + 12  # two vectors per row
    px = sheet.load()
    y0 = 4 + 30 + 18  # legend, then the header of cluster 0
    assert px[4, y0] == (120, 120, 120)  # first cell: vector 13 (position 3), the best of cluster 0
    assert px[4 + cell_w + 12, y0] == (40, 40, 40)  # then vector 11
    assert px[4, y0 + 8 + 2] == (46, 160, 67) and px[4 + cell_w + 12, y0 + 8 + 2] == (230, 145, 56)  # tileable bars
    cluster1 = y0 + 8 + 2 + 3 + 12 + 4 + 18
    assert [px[4, cluster1], px[4 + cell_w + 12, cluster1]] == [(160, 160, 160), (80, 80, 80)]
    with pytest.raises(ValueError, match="expected"):
        library_sheet(lib, imgs[:3])


def test_label_vectors_from_many_threads_keeps_every_label(tmp_path) -> None:
    """label_vectors is a locked read-modify-write: concurrent labellers lose no label."""
    import threading

    from datagen.vectors import label_vectors, rename_label

    d = tmp_path / "lib"
    _library(n=12).save(d)
    ids = VectorLibrary.load(d).ids
    start = threading.Barrier(len(ids))

    def one(i: int) -> None:
        start.wait()
        label_vectors(d, [i], f"c{i}")

    threads = [threading.Thread(target=one, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    back = VectorLibrary.load(d)
    assert [r.label for r in back.records] == [f"c{i}" for i in ids]
    assert sorted(p.name for p in d.iterdir()) == ["library.yaml", "vectors.safetensors"]  # no lock file left
    lib, changed = rename_label(d, f"c{ids[0]}", "tumor")
    assert changed == [ids[0]] and VectorLibrary.load(d).record(ids[0]).label == "tumor"
    with pytest.raises(DatagenError, match="labels in use"):
        rename_label(d, "nope", "x")
