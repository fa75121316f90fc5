"""koala.export: serving exports (SavedModel, LiteRT) that take and return uint8 images and
match the koala tools."""

import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import cli_main, smooth_image

from koala.tasks.sr import models as sr
from koala.tasks.sr.inference import Upscaler

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "samples" / "Wine_by_Jakkub_Mede.jpg"


def low_res(h=23, w=31, seed=0):
    return smooth_image(h, w, seed=seed)  # uint8 (h, w, 3)


@pytest.mark.parametrize("build", [
    lambda: sr.build_fsrcnn(sr.FSRCNNConfig(scale=3, d=8, s=4, m=1)),
    lambda: sr.srcnn_small(scale=2),
], ids=["fsrcnn", "srcnn"])
def test_an_sr_savedmodel_serves_uint8_images_as_the_upscaler(build, tmp_path, capsys):
    model = build()
    model.save(tmp_path / "m.keras")
    out = tmp_path / "saved"
    assert cli_main("export", f"--model={tmp_path / 'm.keras'}", f"--output={out}") == 0
    assert "savedmodel" in capsys.readouterr().out
    served = tf.saved_model.load(str(out)).signatures["serving_default"]
    images = np.stack([low_res(seed=1), low_res(seed=2)])
    got = served(images=tf.constant(images))
    (result,) = got.values()
    s = model.config.scale
    assert result.dtype == tf.uint8 and result.shape == (2, 23 * s, 31 * s, 3)
    want = Upscaler(model, tile=None).upscale(images[1])
    assert np.abs(result.numpy()[1].astype(int) - want).max() <= 1
    # An existing output is kept unless --overwrite.
    assert cli_main("export", f"--model={tmp_path / 'm.keras'}", f"--output={out}") == 2
    assert "exists" in capsys.readouterr().err


def test_a_litert_file_matches_the_savedmodel_and_int8_is_smaller(tmp_path):
    model = sr.build_fsrcnn(sr.FSRCNNConfig(scale=2, d=16, s=8, m=2))
    model.save(tmp_path / "m.keras")
    for name, extra in (("f32.tflite", ()), ("int8.tflite", ("--int8",))):
        assert cli_main("export", f"--model={tmp_path / 'm.keras'}", "--format=litert",
                        f"--output={tmp_path / name}", *extra) == 0
    image = low_res(17, 19, seed=3)[None]
    want = Upscaler(model, tile=None).upscale(image[0])
    for name, tolerance in (("f32.tflite", 1), ("int8.tflite", 8)):
        interpreter = tf.lite.Interpreter(model_path=str(tmp_path / name))
        runner = interpreter.get_signature_runner("serving_default")
        detail = interpreter.get_signature_runner("serving_default").get_input_details()
        assert detail["images"]["dtype"] == np.uint8
        (got,) = runner(images=image).values()
        assert got.shape == (1, 34, 38, 3)
        assert np.abs(got[0].astype(int) - want).max() <= tolerance, name
    assert (tmp_path / "int8.tflite").stat().st_size < (tmp_path / "f32.tflite").stat().st_size


def test_bad_requests_are_one_line_errors(tmp_path, capsys):
    assert cli_main("export", "--model=fsrcnn_x9", f"--output={tmp_path / 'x'}") == 2
    assert "no preset called" in capsys.readouterr().err
    assert cli_main("export", "--model=fsrcnn_x3", "--int8", f"--output={tmp_path / 'y'}") == 2
    assert "--int8 applies to --format=litert" in capsys.readouterr().err


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_the_builtin_bicubic_upscale_equals_tensorflows(scale):
    from koala.data import pipelines
    from koala.tasks.sr.serving import bicubic_upscale

    x = tf.random.stateless_uniform((2, 7, 9, 2), seed=(scale, 1))
    np.testing.assert_allclose(bicubic_upscale(x, scale), pipelines.bicubic_upscale(x, scale),
                               atol=2e-6)


def test_a_colorizer_savedmodel_holds_the_embedder_and_matches_the_tool(tmp_path,
                                                                       mobilenet_none):
    from koala.tasks.colorize.inference import Colorizer
    from koala.tasks.colorize.models.fusion import fusion_small

    model = fusion_small(image_size=32, embedding_dim=1000, embedder="mobilenet",
                         embedder_weights="none")
    model.save(tmp_path / "c.keras")
    out = tmp_path / "saved"
    assert cli_main("export", f"--model={tmp_path / 'c.keras'}", f"--output={out}") == 0
    served = tf.saved_model.load(str(out)).signatures["serving_default"]
    images = np.stack([smooth_image(45, 70, seed=4), smooth_image(45, 70, seed=5)])
    (got,) = served(images=tf.constant(images)).values()
    assert got.dtype == tf.uint8 and got.shape == (2, 45, 70, 3)
    want = Colorizer(keras_load(tmp_path / "c.keras"), mobilenet_none).colorize(images[1])
    diff = np.abs(got.numpy()[1].astype(int) - want)
    # TensorFlow's bicubic fit instead of Pillow's: a few levels on a few pixels.
    assert diff.mean() < 1.0 and diff.max() <= 12
    # The colour round trip inside the graph is koala.ops.color's: L* is kept exactly.
    from koala.ops import color

    l_got = color.srgb_to_lab(got.numpy()[1] / 255.0)[..., 0].numpy()
    l_in = color.srgb_to_lab(images[1] / 255.0)[..., 0].numpy()
    assert np.median(np.abs(l_got - l_in)) < 0.5
    # LiteRT has no anti-aliased resize: a one-line refusal, no file.
    lite = tmp_path / "c.tflite"
    assert cli_main("export", f"--model={tmp_path / 'c.keras'}", "--format=litert",
                    f"--output={lite}") == 2
    assert not lite.exists()


SERVE_WITH_TF_ALONE = """
import sys
import tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
image = tf.io.decode_image(tf.io.read_file(sys.argv[2]), channels=3, expand_animations=False)
(out,) = serve(images=image[None]).values()
tf.io.write_file(sys.argv[3], tf.io.encode_png(out[0]))
print(sorted(m for m in sys.modules if m.split(".")[0] == "koala"))
"""


@pytest.mark.slow
def test_the_colorize_preset_serves_with_tensorflow_alone(tmp_path):
    """The recommended preset (guided refinement, its ImageNet embedder) as a SavedModel: the
    docs/tools.md command, run in a fresh process that imports no koala, gives the tool's
    colours."""
    import subprocess

    from PIL import Image

    from koala.tasks.colorize.inference import Colorizer

    out = tmp_path / "colorizer"
    assert cli_main("export", "--model=fusion_mobilenet", f"--output={out}") == 0
    photo = tmp_path / "p.png"
    Image.open(SAMPLE).convert("RGB").crop((0, 0, 200, 150)).save(photo)
    script = tmp_path / "serve.py"
    script.write_text(SERVE_WITH_TF_ALONE)
    done = subprocess.run([sys.executable, "-I", str(script), str(out), str(photo),
                           str(tmp_path / "o.png")], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"  # no koala module was imported
    got = np.asarray(Image.open(tmp_path / "o.png"))
    colorizer = Colorizer.load("fusion_mobilenet")
    assert colorizer.refine == "guided"
    want = colorizer.colorize(np.asarray(Image.open(photo)))
    diff = np.abs(got.astype(int) - want)
    assert got.shape == want.shape and diff.mean() < 1.0 and diff.max() <= 12
    unrefined = Colorizer.load("fusion_mobilenet", refine="none").colorize(
        np.asarray(Image.open(photo)))
    assert diff.mean() < np.abs(unrefined.astype(int) - want).mean()  # the filter is inside


def keras_load(path):
    import keras

    import koala.registry  # noqa: F401

    return keras.saving.load_model(path)


def test_the_codec_preset_exports_encode_and_decode(tmp_path):
    from koala.tasks.codec import inference as codec

    out = tmp_path / "saved"
    assert cli_main("export", "--model=codec", f"--output={out}") == 0
    loaded = tf.saved_model.load(str(out))
    rgb = smooth_image(30, 41, seed=6)  # not multiples of 4
    (gray,) = loaded.signatures["encode"](images=tf.constant(rgb[None])).values()
    assert gray.dtype == tf.uint8 and gray.shape == (1, 30, 41, 1)
    encoder, decoder = codec.load_codec(codec_preset())
    np.testing.assert_array_equal(gray.numpy()[0, ..., 0], codec.encode(encoder, rgb))
    (back,) = loaded.signatures["decode"](gray=gray).values()
    assert back.shape == (1, 30, 41, 3)
    # The same weights in another graph: a value on a rounding edge may land one level off.
    diff = np.abs(back.numpy()[0].astype(int) - codec.decode(decoder, gray.numpy()[0]))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.005
    lite = tmp_path / "decode.tflite"
    assert cli_main("export", "--model=codec", "--format=litert", "--signature=decode",
                    f"--output={lite}") == 0
    runner = tf.lite.Interpreter(model_path=str(lite)).get_signature_runner()
    (lite_back,) = runner(gray=gray.numpy()).values()
    assert np.abs(lite_back.astype(int) - back.numpy()).max() <= 1


def codec_preset():
    from koala import presets

    return presets.resolve("codec")


def test_onnx_runs_in_onnxruntime_as_the_keras_model(tmp_path, capsys):
    import onnxruntime

    model = sr.build_fsrcnn(sr.FSRCNNConfig(scale=2, d=8, s=4, m=1))
    model.save(tmp_path / "m.keras")
    out = tmp_path / "m.onnx"
    assert cli_main("export", f"--model={tmp_path / 'm.keras'}", "--format=onnx",
                    f"--output={out}") == 0
    assert "Traceback" not in capsys.readouterr().err  # tf2onnx's optimizer notes stay quiet
    session = onnxruntime.InferenceSession(str(out))
    image = smooth_image(11, 13, seed=7)[None]
    (got,) = session.run(None, {session.get_inputs()[0].name: image})
    want = Upscaler(model, tile=None).upscale(image[0])
    assert got.shape == (1, 22, 26, 3) and got.dtype == np.uint8
    assert np.abs(got[0].astype(int) - want).max() <= 1


def test_the_codec_decoder_runs_in_onnxruntime(tmp_path):
    import onnxruntime

    out = tmp_path / "decode.onnx"
    assert cli_main("export", "--model=codec", "--format=onnx", "--signature=decode",
                    f"--output={out}") == 0
    from koala.tasks.codec import inference as codec

    session = onnxruntime.InferenceSession(str(out))
    _, decoder = codec.load_codec(codec_preset())
    for h, w in ((24, 20), (25, 21)):  # a multiple of the codec's 4, and not
        gray = smooth_image(h, w, seed=4)[..., 0]
        (got,) = session.run(None, {session.get_inputs()[0].name: gray[None, ..., None]})
        want = codec.decode(decoder, gray, tile=None)
        assert got.shape == (1, h, w, 3)
        assert np.abs(got[0].astype(int) - want).max() <= 1


def test_onnx_without_tf2onnx_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    model = sr.build_fsrcnn(sr.FSRCNNConfig(scale=2, d=8, s=4, m=1))
    model.save(tmp_path / "m.keras")
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # import tf2onnx -> ImportError
    out = tmp_path / "m.onnx"
    assert cli_main("export", f"--model={tmp_path / 'm.keras'}", "--format=onnx",
                    f"--output={out}") == 2
    assert not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tf2onnx" in err[0] and "koala[onnx]" in err[0]
