"""koala.cli.quiet: TensorFlow's native start-up lines are kept off a tool's output, the rest
passes unchanged (issue 23's quiet tools)."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from conftest import write_image

from koala.cli import quiet

NATIVE = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    b"I0000 00:00:1796548265.849315     426 port.cc:153] oneDNN custom operations are on.\n",
    b"E0000 00:00:1796548270.701377     426 cuda_platform.cc:52] failed call to cuInit: x\n",
    b"W0000 12:34:56.789012  1234 some_file.cc:7] a warning\n",
    b"To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild "
    b"TensorFlow with the appropriate compiler flags.\n",
]
KEPT = [
    b"Epoch 1/80\n",
    b"embedder mobilenet uses RANDOM weights\n",
    b"colorize 1/3 - 2s\r",
    b"colorize 2/3 - 3s\r",
    b"E is for error, not a log line\n",
    b"I0000 is not a log line without its file:line]\n",
    b"photo.jpg: truncated image data\n",
]


def pumped(chunks):
    read_in, write_in = os.pipe()
    read_out, write_out = os.pipe()
    pump = threading.Thread(target=quiet._pump, args=(read_in, write_out))
    pump.start()
    for chunk in chunks:
        os.write(write_in, chunk)
    os.close(write_in)
    pump.join(timeout=10)
    os.close(write_out)
    out = b""
    while data := os.read(read_out, 65536):
        out += data
    os.close(read_in)
    os.close(read_out)
    return out


def test_native_lines_are_dropped_and_the_rest_passes_unchanged():
    lines = [NATIVE[0], KEPT[0], NATIVE[1], KEPT[1], KEPT[2], NATIVE[2], KEPT[3], NATIVE[3],
             NATIVE[4], KEPT[4], KEPT[5], KEPT[6]]
    assert pumped(lines) == b"".join(KEPT)
    # the same bytes cut at every 7th byte (lines arrive in pieces)
    data = b"".join(lines)
    assert pumped([data[i:i + 7] for i in range(0, len(data), 7)]) == b"".join(KEPT)
    assert pumped([b"no newline at the end"]) == b"no newline at the end"


def test_verbosity_or_the_environment_turns_the_filter_off(monkeypatch):
    monkeypatch.delenv("KOALA_NATIVE_LOGS", raising=False)
    assert not quiet.wanted(["koala", "in.png", "-o", "out"])
    assert quiet.wanted(["koala", "--verbosity=1"]) and quiet.wanted(["koala", "-v", "2"])
    assert not quiet.wanted(["koala", "--verbosity=0"])
    monkeypatch.setenv("KOALA_NATIVE_LOGS", "1")
    assert quiet.wanted(["koala"])


def test_a_tool_prints_only_its_own_lines(tmp_path):
    write_image(tmp_path / "in.png", np.full((16, 16, 3), 120, np.uint8))
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "KOALA_NATIVE_LOGS")}
    args = [sys.executable, "-m", "koala.upscale", str(tmp_path / "in.png"), "-o",
            str(tmp_path / "out"), "--noprogress"]
    quiet_run = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300,
                               cwd=os.path.dirname(os.path.dirname(__file__)))
    assert quiet_run.returncode == 0, quiet_run.stderr
    assert quiet_run.stderr == "", quiet_run.stderr
    assert quiet_run.stdout.startswith("upscaled 1 x3, failed 0")
    loud = subprocess.run([*args[:-1], "--noprogress", "--verbosity=1", "-o",
                           str(tmp_path / "out2")], capture_output=True, text=True, env=env,
                          timeout=300, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert loud.returncode == 0 and "I0000" in loud.stderr  # asked for: shown


@pytest.mark.parametrize("runner", ["local", "beam"])
def test_build_records_prints_only_its_own_lines(tmp_path, runner):
    """TensorFlow comes in with the build library, after the filter is up; a Beam build adds
    no note about Google Cloud clients either."""
    if runner == "beam":
        pytest.importorskip("apache_beam")
    write_image(tmp_path / "photos" / "a.png", np.full((16, 16, 3), 120, np.uint8))
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "KOALA_NATIVE_LOGS")}
    done = subprocess.run(
        [sys.executable, "-m", "koala.build_records", f"--input_dir={tmp_path / 'photos'}",
         f"--output_dir={tmp_path / 'out'}", "--groups=rgb", "--noprogress",
         f"--runner={runner}"], capture_output=True, text=True, env=env, timeout=300,
        cwd=os.path.dirname(os.path.dirname(__file__)))
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    assert done.stdout.startswith(f"records: {tmp_path / 'out'}")
