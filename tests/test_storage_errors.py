"""What the machine refuses (an unwritable output, a full disk, Ctrl-C) is one line, never a
traceback, and leaves no temporary file (issue 19, defects 6 and 7)."""

import errno
import pathlib
import subprocess

import pytest
from conftest import cli_main, make_photo_folder

from koala.data import build

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("storage")
    make_photo_folder(root / "photos", n_good=6, with_bad=False)
    return root / "photos"


@pytest.fixture(scope="module")
def rgb_records(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("records") / "rgb"
    result = build.build(build.BuildConfig(input_dir=str(photos), output_dir=str(out),
                                           groups=("rgb",), val_fraction=0.3, progress=False))
    assert result.ok
    return out


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0]
    return err[0]


def writing_into(out, tool, photos, rgb_records) -> list[str]:
    """The arguments that make ``tool`` write into ``out`` (run from the repository)."""
    return {
        "build_records": [f"--input_dir={photos}", f"--output_dir={out}", "--groups=rgb"],
        "train": ["--flagfile=experiments/smoke_srcnn.flags", f"--train_records={rgb_records}",
                  f"--workdir={out}"],
        "evaluate": ["--task=sr", "--scale=2", "--model=fsrcnn_x2", f"--images={photos}",
                     f"--output_dir={out}", "--noprogress"],
        "upscale": [str(photos), "-o", str(out), "--noprogress"],
    }[tool]


@pytest.mark.parametrize("tool", ["build_records", "train", "evaluate"])
def test_an_unwritable_output_is_one_line_naming_it(tool, photos, rgb_records, tmp_path,
                                                     capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")  # a real unwritable place, even for root
    out = blocker / "out"
    assert cli_main(tool, *writing_into(out, tool, photos, rgb_records)) in (1, 2)
    line = one_error_line(capsys)
    assert "not a directory" in line.lower() and str(blocker) in line, line


def test_a_full_disk_in_a_build_is_one_line_leaves_no_temporary_shard_and_resumes(
        photos, tmp_path, capsys, monkeypatch):
    out = tmp_path / "records"
    real_write = build._ShardWriter.write
    written = []

    def full_disk(self, serialized, sizes):
        if written:  # the second record no longer fits
            raise OSError(errno.ENOSPC, "No space left on device", self.tmp)
        written.append(1)
        return real_write(self, serialized, sizes)

    monkeypatch.setattr(build._ShardWriter, "write", full_disk)
    args = [f"--input_dir={photos}", f"--output_dir={out}", "--groups=rgb",
            "--examples_per_shard=2", "--noprogress"]
    assert cli_main("build_records", *args) == 1
    line = one_error_line(capsys)
    assert "No space left on device" in line and str(out) in line
    assert "run the same command again" in line
    assert not list(out.glob(".*.tmp")), "the partial shard was left behind"
    monkeypatch.setattr(build._ShardWriter, "write", real_write)  # space freed
    assert cli_main("build_records", *args, "--resume") == 0
    assert (out / "manifest.json").exists()


def test_a_full_disk_while_training_is_one_line(rgb_records, tmp_path, capsys, monkeypatch):
    from koala.core import saving

    def full_disk(model, path):
        raise OSError(errno.ENOSPC, "No space left on device")  # as h5py reports it: no name

    monkeypatch.setattr(saving, "save", full_disk)
    monkeypatch.chdir(REPO)
    assert cli_main("train", "--flagfile=experiments/smoke_srcnn.flags",
                    f"--train_records={rgb_records}", f"--workdir={tmp_path / 'run'}") == 1
    line = one_error_line(capsys)
    assert line.startswith("error: No space left on device (free some space")


def test_ctrl_c_is_status_130_and_one_line(photos, tmp_path, capsys, monkeypatch):
    from koala.tasks.sr import inference

    def interrupted(self, rgb):
        raise KeyboardInterrupt

    monkeypatch.setattr(inference.Upscaler, "upscale", interrupted)
    assert cli_main("upscale", str(photos), "-o", str(tmp_path / "out"), "--noprogress") == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "interrupted"
    assert not [p for p in (tmp_path / "out").rglob("*") if ".tmp" in p.name]


def test_a_damaged_shard_without_the_check_is_one_line_saying_how_to_find_it(
        rgb_records, tmp_path, capsys, monkeypatch):
    import shutil

    records = tmp_path / "records"
    shutil.copytree(rgb_records, records)
    shard = sorted(records.glob("train-*.tfrecord"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    monkeypatch.chdir(REPO)
    assert cli_main("train", "--flagfile=experiments/smoke_srcnn.flags",
                    f"--train_records={records}", f"--workdir={tmp_path / 'run'}",
                    "--noverify_records", "--epochs=1", "--steps_per_epoch=4") == 2
    line = one_error_line(capsys)
    assert "shard is damaged" in line and "without --noverify_records" in line


def test_an_output_dir_that_is_a_file_is_said_once(photos, tmp_path, capsys):
    target = tmp_path / "a_file"
    target.write_text("x")
    assert cli_main("upscale", str(photos), "-o", str(target), "--noprogress") == 2
    assert one_error_line(capsys) == f"error: --output_dir {target} is a file, not a folder"


def test_gif_files_are_built(tmp_path):
    from PIL import Image

    folder = tmp_path / "gifs"
    folder.mkdir()
    frames = [Image.new("RGB", (40, 30), c) for c in ((200, 0, 0), (0, 200, 0))]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    result = build.build(build.BuildConfig(input_dir=str(folder),
                                           output_dir=str(tmp_path / "out"), groups=("rgb",),
                                           val_fraction=0.0, progress=False))
    assert result.ok and result.manifest["counts"] == {"train": 1, "val": 0}


@pytest.fixture
def tmpfs(tmp_path):
    """``mount(options)`` -> a fresh tmpfs folder mounted with ``options`` (``"size=16k"``,
    ``"ro"``), where this machine lets the tests mount one (root in a container that allows
    it); the test is skipped elsewhere, and the mocked tests above cover the same paths."""
    mounted = []

    def mount(options):
        folder = tmp_path / f"tmpfs{len(mounted)}"
        folder.mkdir()
        try:
            proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs",
                                   str(folder)], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:  # no mount command, or it hangs
            pytest.skip(f"cannot mount a tmpfs here: {e}")
        if proc.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], capture_output=True, timeout=30)


def test_a_real_full_disk_in_a_build_names_the_file_and_the_space_left(photos, tmpfs, capsys):
    disk = tmpfs("size=16k")
    out = disk / "records"
    args = [f"--input_dir={photos}", f"--output_dir={out}", "--groups=rgb",
            "--examples_per_shard=2", "--val_fraction=0", "--noprogress"]
    assert cli_main("build_records", *args) == 1
    line = one_error_line(capsys)
    assert line.startswith(f"error: No space left on device: {out}/") and "MB left there" in line
    assert not [p for p in out.rglob("*") if ".tmp" in p.name], "a temporary file was left"
    subprocess.run(["mount", "-o", "remount,size=1m", str(disk)], check=True)  # space freed
    assert cli_main("build_records", *args, "--resume") == 0
    assert (out / "manifest.json").exists()


@pytest.mark.parametrize("tool", ["build_records", "train", "evaluate", "upscale"])
def test_a_read_only_output_is_one_line(tool, photos, rgb_records, tmpfs, capsys,
                                        monkeypatch):
    out = tmpfs("ro") / "out"
    monkeypatch.chdir(REPO)
    assert cli_main(tool, *writing_into(out, tool, photos, rgb_records)) in (1, 2)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Read-only file system" in err and str(out) in err, err
