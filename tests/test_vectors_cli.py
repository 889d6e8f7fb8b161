"""`datagen vectors extract | score | show | label` on a tiny random model, through the CLI."""

import torch

from datagen.cli import main
from datagen.models import DigipathUNet, UNetConfig, save_generator
from datagen.vectors import VectorLibrary


def test_vectors_commands_end_to_end(tmp_path, capsys):
    torch.manual_seed(0)
    unet = DigipathUNet(UNetConfig(channels=(8, 16, 16, 16), noise_channels=4, default_layer="dec.x4"))
    model = save_generator(tmp_path / "model", unet)
    lib = tmp_path / "lib"
    common = ["--device", "cpu", "--size", "32", "--quiet"]
    assert main(["vectors", "extract", "--model", str(model), "--num-images", "2", "--per-image", "3",
                 "--clusters", "2", "--out", str(lib), *common]) == 0
    loaded = VectorLibrary.load(lib)
    assert len(loaded) == 6 and loaded.layer == "dec.x4" and loaded.channels == 16
    assert set(loaded.clusters) <= {0, 1}

    # score with a small custom extractor would need a module; the default EfficientNet runs on 64 px
    assert main(["vectors", "score", str(lib), "--seeds", "1", "--device", "cpu", "--size", "64", "--quiet"]) == 0
    scored = VectorLibrary.load(lib)
    assert all(r.tileability is not None and -1 <= r.tileability <= 1 for r in scored.records)

    assert main(["vectors", "label", str(lib), "--name", "tumor", "--ids", "0", "1"]) == 0
    assert main(["vectors", "label", str(lib), "--name", "stroma", "--cluster", "1", "--top-tileable", "1"]) == 0
    labelled = VectorLibrary.load(lib)
    assert labelled.record(0).label in ("tumor", "stroma") and "tumor" in labelled.labels
    assert sum(r.label == "stroma" for r in labelled.records) == 1

    out = tmp_path / "show"
    assert main(["vectors", "show", str(lib), "--out", str(out), "--top", "3", "--seeds", "1", *common]) == 0
    html = (out / "report.html").read_text()
    assert (out / "contact_sheet.png").stat().st_size > 0
    assert "data:image/png;base64" in html and "http://" not in html and "https://" not in html

    # errors are one line, not a traceback
    capsys.readouterr()
    assert main(["vectors", "show", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "error" in capsys.readouterr().err


def test_extract_dedupe_and_label_report_copies(tmp_path, capsys):
    """builtin:tissue-small's dec.x16 repeats one vector over an image: `extract` drops the copies
    and says so; with `--dedupe off` they stay, and `label` says the class is fewer vectors than it holds."""
    from datagen.vectors import count_distinct

    lib = tmp_path / "lib"
    args = ["vectors", "extract", "--model", "builtin:tissue-small", "--layer", "dec.x16", "--num-images", "2",
            "--per-image", "3", "--size", "64", "--device", "cpu", "--out", str(lib)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "2 vectors" in out and "4 near-copies dropped" in out and "sample more images" in out
    assert main([*args, "--dedupe", "off"]) == 0
    every = VectorLibrary.load(lib)
    assert len(every) == 6 and count_distinct(every.vectors) == 2 and count_distinct(every.vectors, 1.0) == 6
    capsys.readouterr()
    assert main(["vectors", "label", str(lib), "--name", "tumor", "--ids", "0", "1", "2", "3"]) == 0
    assert "holds 4 vectors but 2 distinct" in capsys.readouterr().out
    assert main(["vectors", "label", str(lib), "--name", "stroma", "--ids", "4"]) == 0
    assert "distinct" not in capsys.readouterr().out
