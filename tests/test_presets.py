"""Presets (koala/presets): the shipped index, names, the sha256 check, tools' defaults."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from koala import presets
from koala.cli import presets as presets_cli
from koala.tasks.sr import models as sr
from tests.conftest import cli_main

SHIPPED = presets.index()


@pytest.fixture
def tiny_index(tmp_path):
    """A preset index in tmp_path with one tiny FSRCNN x2 (``tiny_x2``) and its file."""
    model = sr.build_fsrcnn(sr.FSRCNNConfig(scale=2, d=8, s=4, m=1))
    path = tmp_path / "tiny_x2.keras"
    model.save(path)
    entry = presets.Preset(name="tiny_x2", family="sr", file=path.name,
                           sha256=presets.sha256(path), size=path.stat().st_size,
                           parameters=model.count_params(), scale=2, recommended=True)
    (tmp_path / "presets.json").write_text(json.dumps({"format": 1,
                                                       "presets": [entry.as_dict()]}))
    return tmp_path / "presets.json"


def test_the_shipped_index_lists_every_preset_with_a_matching_file():
    assert {"fsrcnn_x2", "fsrcnn_x3", "fsrcnn_x4"} <= set(SHIPPED)
    files = {p.file for p in SHIPPED.values()}
    on_disk = {f.name for f in presets.DIR.glob("*.keras")}
    assert files == on_disk  # no stray model, none missing
    total = sum(f.stat().st_size for f in presets.DIR.iterdir())
    # The three paper-size fusion generators (fusion_mobilenet, its classification head, and
    # Lal et al.'s: 6.6 M parameters, 26 MB each) and the MobileNet embedder they share (17 MB)
    # are most of it.
    assert total < 128 * 2**20


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_preset_loads_and_matches_its_metadata(name):
    p = SHIPPED[name]
    model = presets.load(name)
    assert model.count_params() == p.parameters
    assert p.family in presets.FAMILIES
    assert p.info["training"]["flagfile"] and os.path.isfile(p.info["training"]["flagfile"])
    assert p.info["metrics"]["model"] and p.info["metrics"]["baseline"]
    if p.family == "sr":
        assert model.config.scale == p.scale
        assert isinstance(model, (sr.SRCNN, sr.FSRCNN, sr.SRAutoencoder))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_each_scale_has_a_recommended_fsrcnn(scale):
    name = presets.default("sr", scale=scale)
    assert name == f"fsrcnn_x{scale}"
    assert SHIPPED[name].recommended


def test_a_wrong_name_lists_the_available_ones(tiny_index):
    with pytest.raises(presets.PresetError, match=r"no preset called 'fsrcnn_x9'.*tiny_x2"):
        presets.resolve("fsrcnn_x9", index_path=tiny_index)
    with pytest.raises(presets.PresetError, match="is a sr preset, not a codec preset"):
        presets.find("tiny_x2", family="codec", index_path=tiny_index)


def test_a_path_is_returned_as_given(tmp_path):
    assert presets.resolve(tmp_path / "m.keras") == os.fspath(tmp_path / "m.keras")
    assert not presets.is_name("runs/a/best.keras")
    assert presets.is_name("fsrcnn_x3")


def test_an_intact_preset_resolves_to_its_file(tiny_index):
    path = presets.resolve("tiny_x2", index_path=tiny_index)
    assert path == os.fspath(tiny_index.parent / "tiny_x2.keras")
    assert presets.default("sr", scale=2, index_path=tiny_index) == "tiny_x2"
    with pytest.raises(presets.PresetError, match="no sr preset for x3"):
        presets.default("sr", scale=3, index_path=tiny_index)


def test_an_altered_file_fails_the_sha256_check(tiny_index):
    path = tiny_index.parent / "tiny_x2.keras"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
    path.write_bytes(bytes(data))
    with pytest.raises(presets.PresetError, match="tiny_x2.*fails its sha256 check"):
        presets.resolve("tiny_x2", index_path=tiny_index)


def test_a_truncated_or_missing_file_is_named(tiny_index):
    path = tiny_index.parent / "tiny_x2.keras"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(presets.PresetError, match="tiny_x2.*100 bytes, expected"):
        presets.resolve("tiny_x2", index_path=tiny_index)
    path.unlink()
    with pytest.raises(presets.PresetError, match="tiny_x2.*is missing"):
        presets.resolve("tiny_x2", index_path=tiny_index)


def test_a_damaged_shipped_preset_stops_the_tool_with_one_line(tmp_path, monkeypatch, capsys):
    """The tools go through the same check: a patched index whose sha256 doesn't match."""
    bad = SHIPPED["fsrcnn_x3"]
    entries = [p.as_dict() for p in SHIPPED.values()]
    for e in entries:
        if e["name"] == "fsrcnn_x3":
            e["sha256"] = "0" * 64
    fake = tmp_path / "presets.json"
    fake.write_text(json.dumps({"format": 1, "presets": entries}))
    (tmp_path / bad.file).write_bytes((presets.DIR / bad.file).read_bytes())
    monkeypatch.setattr(presets, "resolve", _resolve_with(fake))
    Image.new("RGB", (16, 16), (90, 120, 30)).save(tmp_path / "p.png")
    status = cli_main("upscale", tmp_path / "p.png", "-o", tmp_path / "out", "--noprogress")
    err = capsys.readouterr().err
    assert status == 2
    assert "preset fsrcnn_x3" in err and "sha256" in err
    assert not (tmp_path / "out" / "p_x3.png").exists()


def _resolve_with(index_path):
    original = presets.resolve

    def resolve(name_or_path, *, family=None, index_path=index_path):
        return original(name_or_path, family=family, index_path=index_path)

    return resolve


@pytest.mark.parametrize("scale", [None, 2, 4])
def test_upscale_with_no_model_uses_the_preset_of_the_scale(tmp_path, scale):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 24, 3), np.uint8)).save(tmp_path / "p.png")
    args = [tmp_path / "p.png", "-o", tmp_path / "out", "--noprogress"]
    if scale:
        args.append(f"--scale={scale}")
    assert cli_main("upscale", *args) == 0
    s = scale or 3
    with Image.open(tmp_path / "out" / f"p_x{s}.png") as out:
        assert out.size == (24 * s, 20 * s)


def test_a_wrong_preset_name_on_the_command_line(tmp_path, capsys):
    Image.new("RGB", (16, 16)).save(tmp_path / "p.png")
    status = cli_main("upscale", tmp_path / "p.png", "-o", tmp_path / "out",
                      "--model=fsrcnn_x9", "--noprogress")
    err = capsys.readouterr().err
    assert status == 2 and "no preset called 'fsrcnn_x9'" in err and "fsrcnn_x3" in err


def test_a_preset_of_another_family_is_refused_by_colorize(tmp_path, capsys):
    Image.new("RGB", (16, 16)).save(tmp_path / "p.png")
    status = cli_main("colorize", tmp_path / "p.png", "-o", tmp_path / "out",
                      "--model=fsrcnn_x3", "--noprogress")
    assert status == 2 and "not a koala" in capsys.readouterr().err


def test_the_presets_table_lists_each_preset(capsys):
    assert cli_main("presets") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["name", "family", "scale"]
    for name, p in SHIPPED.items():
        row = next(line for line in out.splitlines() if line.startswith(name + " "))
        baseline = p.info["metrics"]["baseline_name"]  # bicubic for SR, luma for the codec
        assert f"{p.parameters:,}" in row and f"({baseline} " in row


def test_the_table_formats_the_metric_next_to_its_baseline():
    p = presets.Preset(name="a", family="sr", file="a.keras", sha256="0", size=2048,
                       parameters=1234, scale=3, info={"metrics": {
                           "model": {"psnr_y": 31.5}, "baseline": {"psnr_y": 30.0},
                           "baseline_name": "bicubic"}})
    row = presets_cli.table({"a": p}).splitlines()[2]
    assert "psnr_y 31.50 (bicubic 30.00, +1.50 dB)" in row and "1,234" in row and "x3" in row


def test_add_copies_the_model_and_records_how_it_was_made(tmp_path, monkeypatch, capsys):
    store = tmp_path / "presets"
    store.mkdir()
    monkeypatch.setattr(presets, "DIR", store)
    monkeypatch.setattr(presets, "INDEX", store / "presets.json")
    (store / "presets.json").write_text('{"format": 1, "presets": []}')
    workdir = tmp_path / "run"
    workdir.mkdir()
    model = sr.build_fsrcnn(sr.FSRCNNConfig(scale=2, d=8, s=4, m=1))
    model.save(workdir / "best.keras")
    init = {"path": "/x/fsrcnn_x3.keras", "sha256": "ab" * 32}
    (workdir / "run.json").write_text(json.dumps({"init_from": init}))
    flagfile = tmp_path / "tiny.flags"
    flagfile.write_text("--model=fsrcnn\n--scale=2\n")
    report = tmp_path / "metrics.json"
    report.write_text(json.dumps({"methods": ["bicubic", "best"], "images": 3, "mean": {
        "bicubic": {"psnr_y": 30.0}, "best": {"psnr_y": 31.25}}}))
    assert cli_main("presets", "add", "tiny_x2", f"--from={workdir / 'best.keras'}",
                    "--family=sr", f"--flagfile_used={flagfile}", f"--eval={report}",
                    "--wall_time_s=42", "--train_command=TF_NUM_INTRAOP_THREADS=1 python -m "
                    "koala.train --flagfile=tiny.flags", "--recommended") == 0
    entry = presets.index(store / "presets.json")["tiny_x2"]
    assert entry.sha256 == presets.sha256(store / "tiny_x2.keras") == presets.sha256(
        workdir / "best.keras")
    assert (entry.scale, entry.parameters, entry.recommended) == (2, model.count_params(), True)
    training = entry.info["training"]
    assert training["command"].startswith("TF_NUM_INTRAOP_THREADS=1 ")
    assert training["init_from"] == init and training["wall_time_s"] == 42
    assert training["flagfile_text"] == "--model=fsrcnn\n--scale=2\n"
    assert entry.info["metrics"]["model"] == {"psnr_y": 31.25}
    assert entry.info["metrics"]["baseline"] == {"psnr_y": 30.0}
    assert "added preset tiny_x2" in capsys.readouterr().out


def test_a_reader_that_leaves_early_ends_the_table_quietly():
    import subprocess
    import sys

    # `python -m koala.presets | head -0`: the reader is gone before the first write.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "koala.presets"], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert proc.returncode == 141, proc.stderr  # it was "error: [Errno 32] Broken pipe", 2
    assert "rror" not in proc.stderr


COLORIZE_PRESETS = sorted(n for n, p in SHIPPED.items() if p.family == "colorize")
# The fusion-type presets (fusion, Lal et al.) take an embedding; VCNN colours from Y alone.
EMBEDDING_PRESETS = [n for n in COLORIZE_PRESETS if SHIPPED[n].info.get("model") != "VCNN"]


def test_colorize_has_a_recommended_preset_that_ships_its_embedder():
    name = presets.default("colorize")
    assert name == "fusion_mobilenet" and SHIPPED[name].recommended
    assert {"fusion_mobilenet", "lal"} <= set(EMBEDDING_PRESETS) and "vcnn" in COLORIZE_PRESETS
    for n in COLORIZE_PRESETS:
        weights = presets.embedder_weights(n)
        if n in EMBEDDING_PRESETS:
            assert weights and os.path.dirname(weights) == str(presets.DIR)
        else:
            assert weights is None
        assert presets.decoding(n)["saturation"] > 0  # picked on held-out photos


@pytest.mark.parametrize("name", EMBEDDING_PRESETS)
def test_a_colorize_preset_embeds_a_photo_as_its_records_did(name, tmp_path):
    # Records built with the preset's own embedder weights file (as the preset's were, from
    # ../shared/weights), then the preset's inference path on the same photo.
    from conftest import make_photo_folder

    from koala.data import build, features, records
    from koala.ops import images
    from koala.tasks.colorize.inference import Colorizer

    good, _ = make_photo_folder(tmp_path / "photos", n_good=2, with_bad=False)
    cfg = build.BuildConfig(input_dir=str(tmp_path / "photos"), output_dir=str(tmp_path / "r"),
                            groups=("color",), embedder="mobilenet",
                            embedder_weights=presets.embedder_weights(name),
                            val_fraction=0.0, progress=False)
    assert build.build(cfg).ok
    stored = {}
    import tensorflow as tf

    for f in records.resolve(str(tmp_path / "r"), "train").files:
        for s in tf.data.TFRecordDataset(f):
            parsed = features.parse(s, ["color"])
            stored[parsed[features.NAME].numpy().decode()] = features.decode_embedding(
                parsed[features.EMBEDDING]).numpy()
    colorizer = Colorizer.load(name)
    assert colorizer.config.embedder == "mobilenet"
    for rel in good:
        rgb = images.load_image(tmp_path / "photos" / rel).rgb
        got = colorizer.embedder.embed(colorizer.embedder.fit(rgb)[None])[0]
        # float16 storage: relative error <= 2**-11 of each value
        np.testing.assert_allclose(got, stored[rel], rtol=2**-10, atol=1e-6)
        assert got.max() > 0.01  # a real ImageNet softmax, not a flat random one


def test_add_ships_a_colorizers_embedder_weights_and_decoding(tmp_path, monkeypatch):
    from koala.tasks.colorize.models.fusion import fusion_small

    store = tmp_path / "presets"
    store.mkdir()
    monkeypatch.setattr(presets, "DIR", store)
    monkeypatch.setattr(presets, "INDEX", store / "presets.json")
    model = fusion_small(image_size=32, embedding_dim=1000, embedder="mobilenet",
                         embedder_weights="/elsewhere/mobilenet.weights.h5")
    model.save(tmp_path / "best.keras")
    weights = tmp_path / "mobilenet.weights.h5"
    weights.write_bytes(b"\x89HDF weights stand-in")
    flagfile = tmp_path / "c.flags"
    flagfile.write_text("--model=fusion\n")
    report = tmp_path / "metrics.json"
    report.write_text(json.dumps({"methods": ["gray", "best"], "images": 3, "mean": {
        "gray": {"psnr": 22.0}, "best": {"psnr": 23.0}}}))
    args = [f"--from={tmp_path / 'best.keras'}", "--family=colorize",
            f"--flagfile_used={flagfile}", f"--eval={report}", "--wall_time_s=1",
            f"--embedder_weights={weights}", "--embedder_license=Apache-2.0",
            "--saturation=1.1"]
    assert cli_main("presets", "add", "tiny_color", *args) == 0
    assert cli_main("presets", "add", "tiny_color2", *args, "--temperature=0.3",
                    "--refine=guided") == 0
    index = store / "presets.json"
    assert presets.embedder_weights("tiny_color", index_path=index) == str(
        store / "mobilenet.weights.h5")
    assert (store / "mobilenet.weights.h5").read_bytes() == weights.read_bytes()  # one copy
    assert presets.decoding("tiny_color", index_path=index) == {"saturation": 1.1}
    assert presets.decoding("tiny_color2", index_path=index) == {
        "saturation": 1.1, "temperature": 0.3, "refine": "guided"}
    assert presets.embedder_weights(str(tmp_path / "best.keras"), index_path=index) is None
    assert presets.decoding(str(tmp_path / "best.keras"), index_path=index) == {}
    (store / "mobilenet.weights.h5").write_bytes(b"\x89HDF weights stand-IN")  # same size
    with pytest.raises(presets.PresetError, match="sha256"):
        presets.embedder_weights("tiny_color", index_path=index)
