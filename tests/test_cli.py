"""What every command line shares (koala/cli/common.py): in-process main(argv) on a fresh
FlagValues, --help without TensorFlow, one-line errors, and a flag of another family refused."""

import subprocess
import sys

import pytest

from koala.cli import bin_prior, build_records, codec, colorize, common, evaluate, train, upscale

TOOLS = {"train": train, "colorize": colorize, "upscale": upscale, "codec": codec,
         "evaluate": evaluate, "build_records": build_records, "bin_prior": bin_prior}


def _main(module, *args):
    """main(argv) in-process: the exit status, as ``python -m`` would end with."""
    try:
        return module.main([module.__name__, *args])
    except common.Exit as e:
        return e.status


@pytest.mark.parametrize("name", ["train", "colorize", "upscale", "codec", "bin_prior"])
def test_help_is_fast_and_imports_no_tensorflow(name):
    code = (f"import sys\nfrom koala.cli import common, {name} as m\n"
            f"try:\n    m.main(['{name}', '--help'])\nexcept common.Exit as e:\n"
            f"    assert e.status == 0, e.status\n"
            f"print('TF' if 'tensorflow' in sys.modules else 'noTF')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("noTF")
    assert "flags:" in proc.stdout and "--" in proc.stdout


def test_a_flag_of_another_family_is_a_one_line_error(capsys):
    status = _main(train, "--model=fusion_small", "--stage2_epoch=5", "--workdir=w",
                   "--train_records=r")
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert err.count("\n") == 0, err
    assert "--stage2_epoch" in err and "codec family" in err and "colorize" in err
    status = _main(train, "--model=srcnn", "--head=classification", "--workdir=w",
                   "--train_records=r")
    err = capsys.readouterr().err.strip()
    assert status == 2 and "--head" in err and "colorize family" in err and "sr family" in err
    # A setting two families share is accepted by both.
    for model in ("srcnn_small", "codec_small"):
        run, cfg = train.config_from_flags(_parsed(train, f"--model={model}",
                                                   "--patches_per_image=3"))
        assert cfg.patches_per_image == 3


def _parsed(module, *args):
    fv, _ = common.parse([module.__name__, "--workdir=w", "--train_records=r", *args],
                         module.define_flags, doc="")
    return fv


def test_train_flags_default_to_the_dataclasses():
    from koala import registry
    from koala.core.run_config import RunConfig

    run, cfg = train.config_from_flags(_parsed(train, "--model=codec_small"))
    assert run == RunConfig(workdir="w", train_records="r", model="codec_small")
    assert cfg == registry.TASKS["codec"].config_class()
    text = train.flags_text(run, cfg)
    assert "--stage2_epoch=90" in text and "--head" not in text  # only its own family's


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_unknown_flag_is_a_one_line_error(name, capsys):
    assert _main(TOOLS[name], "--no_such_flag=1") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "no_such_flag" in err and "\n" not in err


def test_missing_required_flag_is_named(capsys):
    assert _main(colorize, "in.png") == 2
    err = capsys.readouterr().err
    assert "--output_dir" in err and "--model" not in err  # --model defaults to a preset


def test_no_model_and_no_preset_of_the_family_is_one_line(tmp_path, capsys, monkeypatch):
    """A copy of koala without a colorize preset: an omitted --model says so, naming the way
    out."""
    from PIL import Image

    from koala import presets

    empty = tmp_path / "presets.json"
    empty.write_text('{"format": 1, "presets": []}')
    real = presets.default
    monkeypatch.setattr(presets, "default",
                        lambda family, scale=None: real(family, scale=scale, index_path=empty))
    Image.new("RGB", (16, 16)).save(tmp_path / "in.png")
    assert _main(colorize, str(tmp_path / "in.png"), "-o", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "ships no colorize preset" in err and "--model PATH" in err


def test_colorize_with_no_model_uses_the_shipped_preset(tmp_path):
    """The recommended preset, with the embedder weights it ships: offline, no --model."""
    import numpy as np
    from conftest import smooth_image
    from PIL import Image

    Image.fromarray(smooth_image(40, 56, seed=3)).save(tmp_path / "in.png")
    assert _main(colorize, str(tmp_path / "in.png"), "-o", str(tmp_path / "out"),
                 "--noprogress") == 0
    out = np.asarray(Image.open(tmp_path / "out" / "in_color.png"))
    assert out.shape == (40, 56, 3)
    chroma = out.astype(int).max(-1) - out.astype(int).min(-1)
    assert chroma.mean() > 1  # coloured, not the gray input


@pytest.mark.parametrize("preset", ["vcnn", "lal"])
def test_colorize_from_the_vcnn_and_lal_presets(tmp_path, preset):
    """Liang et al.'s and Lal et al.'s presets by name, at the input's exact size."""
    import numpy as np
    from conftest import smooth_image
    from PIL import Image

    image = smooth_image(37, 53, seed=5)
    Image.fromarray(image).save(tmp_path / "in.png")
    assert _main(colorize, str(tmp_path / "in.png"), "-o", str(tmp_path / "out"),
                 "--model", preset, "--noprogress") == 0
    out = np.asarray(Image.open(tmp_path / "out" / "in_color.png"))
    assert out.shape == (37, 53, 3)
    assert not np.array_equal(out, image)


def test_family_configs_agree_with_the_libraries():
    """The TF-free config modules write out a few constants of the TF modules."""
    from koala.data import pipelines
    from koala.ops import colorbins
    from koala.tasks.codec import config as codec_config
    from koala.tasks.codec import model as codec_model
    from koala.tasks.colorize import config as colorize_config
    from koala.tasks.sr import config as sr_config

    assert colorize_config.ANNEAL_TEMPERATURE == colorbins.ANNEAL_TEMPERATURE
    assert colorize_config.REBALANCE_LAMBDA == colorbins.REBALANCE_LAMBDA
    assert sr_config.SR_CHANNELS == pipelines.SR_CHANNELS
    assert set(codec_config.LOSS_PRESETS) == set(codec_model.PRESETS)
    assert codec_config.PERCEPTUAL_NETS == codec_model.PERCEPTUAL_NETS
    assert codec_config.QUANT_UNITS == codec_model.QUANT_UNITS
    assert colorize_config.DEFAULT_REFERENCE_SAMPLES == __import__(
        "koala.ops.welsh", fromlist=["x"]).DEFAULT_SAMPLES
    assert bin_prior.PRIOR_FILE == __import__("koala.data.bin_prior",
                                              fromlist=["x"]).PRIOR_FILE


def test_every_task_names_its_config_and_evaluator():
    from koala import registry

    for name, task in registry.TASKS.items():
        assert task.name == name
        assert callable(task.evaluator.run)
        assert task.config_class.__module__ == f"koala.tasks.{name}.config"
    assert {entry.task for entry in registry.MODELS.values()} == set(registry.TASKS)
