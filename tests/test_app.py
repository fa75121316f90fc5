"""koala.app: the work behind each button (Tools, in-process), its error messages, the page's
components, and the page itself driven in a real headless Chromium through Playwright.

The browser test needs Debian's Chromium (/usr/bin/chromium, or KOALA_CHROMIUM) and the Python
package playwright. Where they are missing it is skipped with the reason, unless
KOALA_REQUIRE_BROWSER=1 (set by .ci/run, which installs Chromium), where it fails instead.
KOALA_APP_SCREENSHOT=PATH also writes its screenshot of the colorized sample there
(docs/images/app_colorize.png was made that way).
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_main, smooth_image, write_image

gr = pytest.importorskip("gradio")  # in requirements.txt; the core install does not need it

from koala.cli import app  # noqa: E402
from koala.core.errors import KoalaError  # noqa: E402
from koala.ops import color  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"
SAMPLE = SAMPLES / "Wine_by_Jakkub_Mede.jpg"


@pytest.fixture(scope="module")
def tools():
    return app.Tools()


def _lightness(rgb):
    return color.srgb_to_lab(rgb.astype(np.float32) / 255.0).numpy()[..., 0]


def test_colorize_keeps_the_size_and_the_lightness(tools, tmp_path):
    photo = write_image(tmp_path / "p.png", smooth_image(56, 40, seed=3))
    names, default = tools.colorize_presets()
    assert default in names
    out, status = tools.colorize(str(photo), default, None)
    assert out.shape == (56, 40, 3) and out.dtype == np.uint8
    # The output is the input's L* with predicted a*b*: lightness kept within rounding.
    assert np.abs(_lightness(out) - _lightness(smooth_image(56, 40, seed=3))).max() < 2.5
    assert f"colorized 40x56 with {default}" in status
    gray, _ = tools.colorize(str(photo), default, 0.0)  # saturation 0 is the gray baseline
    assert np.abs(gray.astype(int) - gray[..., :1]).max() <= 1


def test_hints_pull_the_colour_near_them(tools, tmp_path):
    base = np.full((48, 48, 3), 128, np.uint8)
    photo = write_image(tmp_path / "gray.png", base)
    marks = base.copy()
    marks[20:28, 20:28] = (200, 40, 40)  # a red stroke on the gray photo
    hints = write_image(tmp_path / "hints.png", marks)
    plain, _ = tools.colorize(str(photo), tools.colorize_presets()[1], None)
    hinted, status = tools.colorize(str(photo), tools.colorize_presets()[1], None, str(hints))
    a_star = color.srgb_to_lab(hinted.astype(np.float32) / 255.0).numpy()[..., 1]
    a_plain = color.srgb_to_lab(plain.astype(np.float32) / 255.0).numpy()[..., 1]
    assert a_star[22:26, 22:26].mean() > a_plain[22:26, 22:26].mean() + 20
    assert "corrected by the hints" in status


def test_upscale_is_the_preset_upscaler(tools, tmp_path):
    from koala import presets
    from koala.tasks.sr.inference import Upscaler

    image = smooth_image(20, 28, seed=1)
    out, status = tools.upscale(str(write_image(tmp_path / "s.png", image)), 2)
    expected = Upscaler.load(presets.default("sr", scale=2)).upscale(image)
    np.testing.assert_array_equal(out, expected)
    assert "upscaled 28x20 x2 to 56x40" in status


def test_codec_encodes_to_8_bit_gray_and_decodes_it(tools, tmp_path):
    from PIL import Image

    from koala.ops import metrics

    image = np.asarray(Image.open(SAMPLE).convert("RGB"))[100:164, 100:164]
    gray, status = tools.encode(str(write_image(tmp_path / "c.png", image)))
    assert gray.shape == (64, 64) and gray.dtype == np.uint8 and "encoded 64x64" in status
    restored, _ = tools.decode(gray)
    from_file, _ = tools.decode(str(write_image(tmp_path / "g.png", gray)))
    np.testing.assert_array_equal(restored, from_file)  # the page's state is the PNG's pixels
    luma = np.repeat(np.round(image @ [0.299, 0.587, 0.114]).astype(np.uint8)[..., None], 3, -1)
    assert metrics.psnr(restored, image) > metrics.psnr(luma, image) + 3


def test_bad_files_become_one_line_messages(tools, tmp_path):
    good = write_image(tmp_path / "ok.jpg", smooth_image(40, 40), quality=95)
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(good.read_bytes()[:300])
    (tmp_path / "text.png").write_text("not an image")
    for bad in (truncated, tmp_path / "text.png"):
        with pytest.raises(KoalaError, match=bad.name):
            tools.upscale(str(bad), 3)
        with pytest.raises(gr.Error) as caught:
            app.shown(tools.upscale)(str(bad), 3)
        assert bad.name in caught.value.message and "Traceback" not in caught.value.message
    with pytest.raises(gr.Error, match="drop an image file"):
        app.shown(tools.encode)(None)
    small = app.Tools(max_pixels=100)
    with pytest.raises(gr.Error, match="ok.jpg"):
        app.shown(small.upscale)(str(good), 3)


def test_an_unexpected_error_is_a_message_and_a_server_traceback(capsys):
    def broken(_):
        raise RuntimeError("boom")

    with pytest.raises(gr.Error) as caught:
        app.shown(broken)(1)
    assert caught.value.message == "RuntimeError: boom"
    assert "Traceback" in capsys.readouterr().err


def test_the_page_has_the_three_tools(tools):
    page = app.build(tools)
    ids = {c.get("props", {}).get("elem_id") for c in page.get_config_file()["components"]}
    for tab in ("colorize", "upscale"):
        assert {f"{tab}-photo", f"{tab}-button", f"{tab}-result", f"{tab}-status"} <= ids
    assert {"codec-photo", "codec-encode", "codec-decode", "codec-restored",
            "colorize-hints", "colorize-preset"} <= ids


def test_main_refuses_arguments_and_explains_a_missing_gradio(monkeypatch, capsys):
    assert cli_main("app", "photo.jpg") == 2
    assert "takes no arguments" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    assert cli_main("app") == 2
    assert "pip install koala[app]" in capsys.readouterr().err


# ---- the page in a real browser ------------------------------------------------------------

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _browser_or_skip():
    chromium = os.environ.get("KOALA_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    missing = []
    if not os.path.exists(chromium):
        missing.append(f"no Chromium at {chromium} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("no playwright (pip install playwright)")
    if missing:
        if os.environ.get("KOALA_REQUIRE_BROWSER") == "1":
            pytest.fail("; ".join(missing))
        pytest.skip("; ".join(missing))
    return chromium


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``python -m koala.app`` on a free port, as a user starts it; yields its URL."""
    _browser_or_skip()
    port = _free_port()
    log = tmp_path_factory.mktemp("app") / "app.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "koala.app", f"--port={port}",
                                 "--max_upload_mb=1"], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"the app did not start: {log.read_text()[-2000:]}")
                time.sleep(0.5)
        yield url, log
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_the_page_in_a_browser(served, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, log = served
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(SAMPLE.read_bytes()[:2000])
    small = write_image(tmp_path / "small.png", smooth_image(40, 48, seed=2))
    big = tmp_path / "big.png"
    big.write_bytes(os.urandom(1_100_000))  # over --max_upload_mb=1
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_browser_or_skip(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        # Colorize the sample: a full-resolution result and the status line.
        page.locator("#colorize-photo input[type=file]").set_input_files(str(SAMPLE))
        page.locator("#colorize-button").click()
        expect(page.locator("#colorize-status")).to_contain_text("colorized 341x512",
                                                                 timeout=120_000)
        expect(page.locator("#colorize-result img")).to_be_visible()
        shot = tmp_path / "colorize.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 20_000
        if os.environ.get("KOALA_APP_SCREENSHOT"):
            shutil.copyfile(shot, os.environ["KOALA_APP_SCREENSHOT"])
        # A truncated photo: a message on the page, no traceback.
        page.locator("#colorize-photo button[aria-label='Clear']").click()
        page.locator("#colorize-photo input[type=file]").set_input_files(str(truncated))
        page.locator("#colorize-button").click()
        toast = page.locator(".toast-body").filter(has_text="cut.jpg")
        expect(toast).to_be_visible(timeout=60_000)
        assert "Traceback" not in toast.inner_text()
        # Upscale x2.
        page.get_by_role("tab", name="Upscale").click()
        page.locator("#upscale-photo input[type=file]").set_input_files(str(small))
        page.locator("#upscale-scale").get_by_label("2").check()
        page.locator("#upscale-button").click()
        expect(page.locator("#upscale-status")).to_contain_text("to 96x80", timeout=60_000)
        # Codec: encode, then decode what was encoded.
        page.get_by_role("tab", name="Codec").click()
        page.locator("#codec-photo input[type=file]").set_input_files(str(small))
        page.locator("#codec-encode").click()
        expect(page.locator("#codec-status")).to_contain_text("encoded 48x40", timeout=60_000)
        page.locator("#codec-decode").click()
        expect(page.locator("#codec-status")).to_contain_text("decoded 48x40", timeout=60_000)
        expect(page.locator("#codec-restored img")).to_be_visible()
        # An upload over the limit is refused by the server.
        page.locator("#codec-gray input[type=file]").set_input_files(str(big))
        too_big = page.locator(".toast-body").filter(has_text="exceed the maximum allowed size")
        expect(too_big).to_be_visible(timeout=30_000)
        browser.close()
    assert "Traceback" not in log.read_text()
