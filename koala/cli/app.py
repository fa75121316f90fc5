r"""A web page for koala's tools: drop a photo, get it colorized, upscaled or encoded.

  python -m koala.app [--port=7860] [--host=127.0.0.1] [--max_upload_mb=50] \
      [--max_pixels=N]

Serves a Gradio app on http://HOST:PORT with three tabs, each on the shipped presets
(``python -m koala.presets``), offline, at the photo's full resolution:

* **Colorize**: a photo (colour photos are used through their lightness), the colorize preset
  and its saturation (the preset's own by default), and optionally a hints image (the gray
  photo with colour drawn on it, as ``koala.colorize --hints``) whose colours correct the
  preset's near them.
* **Upscale**: a photo and the factor (2, 3 or 4: the FSRCNN preset of that factor).
* **Codec**: encode a photo into the grayscale that hides its colour (a real 8-bit image),
  then decode that grayscale, or any koala grayscale you upload, back to colour.

The page listens on 127.0.0.1 (this machine only) unless ``--host`` asks for another address
(``--host=0.0.0.0`` serves the whole network: the page has no login). Uploads over
``--max_upload_mb`` are refused by the server, images over ``--max_pixels`` by koala's loader;
a bad file (corrupt, truncated, not an image, too big) is shown as a one-line message on the
page, never as a traceback. Results are PNG files at the input's size (the download button of
each result). Gradio is an optional extra: ``pip install koala[app]``.

The work behind each button is :class:`Tools`, which tests call without a browser.
"""

from __future__ import annotations

import functools
import os
import sys
import time
import traceback

import numpy as np
from absl import flags

from koala.cli import common
from koala.ops.images import DEFAULT_MAX_PIXELS

DEFAULT_PORT = 7860
DEFAULT_HOST = "127.0.0.1"
DEFAULT_MAX_UPLOAD_MB = 50
SCALES = (2, 3, 4)
# Plain system fonts: Gradio's default theme asks Google Fonts, which an offline page can't reach.
FONTS = ("ui-sans-serif", "system-ui", "sans-serif")


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_integer("port", DEFAULT_PORT, "Port to serve on.", lower_bound=1,
                         upper_bound=65535, flag_values=fv)
    flags.DEFINE_string("host", DEFAULT_HOST, "Address to listen on (default 127.0.0.1: this "
                        "machine only; 0.0.0.0 serves every network the machine is on, with no "
                        "login).", flag_values=fv)
    flags.DEFINE_integer("max_upload_mb", DEFAULT_MAX_UPLOAD_MB, "Largest upload the server "
                         "accepts, in MB.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("max_pixels", DEFAULT_MAX_PIXELS, "Decompression-bomb limit on the "
                         "images: larger ones are refused with a message.", lower_bound=1,
                         flag_values=fv)


def _size(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]}"


class Tools:
    """The work behind the page's buttons, on the shipped presets, without Gradio.

    Each method takes file paths (what the page uploads), loads them with koala's loader
    (:func:`koala.ops.images.load_image`), and returns ``(image, status line)``: a uint8 array
    at the input's size and a sentence saying what was done. Models are loaded on first use and
    kept. Errors are :class:`~koala.core.errors.KoalaError` (``ImageError`` for a bad file)
    with a one-line message.
    """

    def __init__(self, *, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.max_pixels = max_pixels
        self._models: dict = {}  # loaded once per process, by what was asked

    def _kept(self, key, load):
        if key not in self._models:
            self._models[key] = load()
        return self._models[key]

    def colorizer(self, preset: str):
        from koala.tasks.colorize.inference import Colorizer

        return self._kept(("colorize", preset), lambda: Colorizer.load(preset))

    def upscaler(self, scale: int):
        from koala import presets
        from koala.tasks.sr.inference import Upscaler

        return self._kept(("sr", scale),
                          lambda: Upscaler.load(presets.default("sr", scale=scale)))

    def codec(self):
        from koala import presets
        from koala.tasks.codec import inference as codec

        def load():
            encoder, decoder = codec.load_codec(presets.default("codec"))
            return codec.TiledPart(encoder), codec.TiledPart(decoder)

        return self._kept(("codec",), load)

    @staticmethod
    def colorize_presets() -> tuple[list[str], str | None]:
        """The colorize presets' names and the recommended one (None when none is shipped)."""
        from koala import presets

        names = sorted(p.name for p in presets.index().values() if p.family == "colorize")
        try:
            return names, presets.default("colorize")
        except presets.PresetError:
            return names, None

    @staticmethod
    def saturation_of(preset: str) -> float:
        """The preset's own saturation (picked on held-out photos), or the colorizer default."""
        from koala import presets
        from koala.tasks.colorize.inference import DEFAULT_SATURATION

        return float(presets.decoding(preset).get("saturation", DEFAULT_SATURATION))

    def _load(self, path, what: str):
        from koala.core.errors import KoalaError
        from koala.ops import images

        if not path:
            raise KoalaError(f"no {what}: drop an image file on the box first")
        return images.load_image(path, max_pixels=self.max_pixels,
                                 name=os.path.basename(str(path)))

    def colorize(self, photo, preset: str, saturation: float | None = None, hints=None):
        from koala.tasks.colorize import user

        loaded = self._load(photo, "photo")
        colorizer = self.colorizer(preset)
        start = time.perf_counter()
        if hints:
            marks = self._load(hints, "hints image")
            out = user.colorize_with_hints(loaded, marks, colorizer, saturation=saturation,
                                           name=os.path.basename(str(hints)))
            how = "corrected by the hints"
        else:
            out = colorizer.colorize(loaded, saturation=saturation)
            how = f"refine {colorizer.refine}"
        used = colorizer.saturation if saturation is None else saturation
        return out, self._status(
            loaded, f"colorized {_size(out)} with {preset} (saturation {used:g}, {how}) in "
            f"{time.perf_counter() - start:.1f} s")

    def upscale(self, photo, scale: int):
        loaded = self._load(photo, "photo")
        upscaler = self.upscaler(int(scale))
        start = time.perf_counter()
        out = upscaler.upscale(loaded.rgb)
        return out, self._status(
            loaded, f"upscaled {_size(loaded.rgb)} x{upscaler.scale} to {_size(out)} in "
            f"{time.perf_counter() - start:.1f} s")

    def encode(self, photo):
        from koala.tasks.codec import inference as codec

        loaded = self._load(photo, "photo")
        encoder, _ = self.codec()
        start = time.perf_counter()
        gray = codec.encode(encoder, loaded)
        return gray, self._status(
            loaded, f"encoded {_size(gray)} into an 8-bit grayscale in "
            f"{time.perf_counter() - start:.1f} s; decode it to get the colour back")

    def decode(self, gray):
        """Decodes an uploaded grayscale file (a path) or an encoded uint8 (H, W) array."""
        from koala.tasks.codec import inference as codec

        note = ""
        if isinstance(gray, np.ndarray):
            array = gray
        else:
            loaded = self._load(gray, "grayscale")
            array = loaded.rgb[..., 0] if loaded.was_grayscale else codec.luma(loaded.rgb)
            note = "" if loaded.was_grayscale else " (a colour image: its BT.601 luma)"
        _, decoder = self.codec()
        start = time.perf_counter()
        out = codec.decode(decoder, array)
        return out, (f"decoded {_size(out)}{note} in {time.perf_counter() - start:.1f} s")

    @staticmethod
    def _status(loaded, line: str) -> str:
        return "; ".join((line, *loaded.warnings))


def shown(work):
    """``work`` with every error turned into a message on the page (``gr.Error``): koala's
    own errors as their one line, anything else as its type and message, with the traceback on
    the server's stderr only."""
    import gradio as gr

    from koala.core.errors import KoalaError

    @functools.wraps(work)
    def run(*args):
        try:
            return work(*args)
        except gr.Error:
            raise
        except (KoalaError, ValueError) as e:
            raise gr.Error(str(e), print_exception=False) from None
        except Exception as e:  # the page shows a line; the server log keeps the traceback
            traceback.print_exc(file=sys.stderr)
            raise gr.Error(f"{type(e).__name__}: {e}", print_exception=False) from None
    return run


def _result_column(gr, tab: str, label: str):
    """A tab's output column: the full-resolution PNG result and the status line."""
    with gr.Column():
        result = gr.Image(label=label, type="numpy", format="png", interactive=False,
                          elem_id=f"{tab}-result")
        status = gr.Markdown(elem_id=f"{tab}-status")
    return result, status


def build(tools: Tools):
    """The page (a ``gr.Blocks``): Colorize, Upscale and Codec tabs calling ``tools``."""
    import gradio as gr

    names, default = tools.colorize_presets()
    image_types = ["image"]
    with gr.Blocks(title="koala") as page:
        gr.Markdown("# koala\nColorize, upscale and encode photos with koala's presets, on "
                    "this machine, at full resolution.")
        with gr.Tab("Colorize", id="colorize"):
            with gr.Row():
                with gr.Column():
                    photo = gr.File(label="Photo (colour photos are used through their "
                                    "lightness)", file_types=image_types, elem_id="colorize-photo")
                    hints = gr.File(label="Hints (optional): the gray photo with colour drawn "
                                    "on it", file_types=image_types, elem_id="colorize-hints")
                    preset = gr.Dropdown(names, value=default, label="Preset",
                                         elem_id="colorize-preset")
                    saturation = gr.Slider(0.0, 2.0, step=0.05, label="Saturation",
                                           value=tools.saturation_of(default) if default else 1.0,
                                           elem_id="colorize-saturation")
                    button = gr.Button("Colorize", variant="primary", elem_id="colorize-button")
                result, status = _result_column(gr, "colorize", "Colorized")
            preset.change(shown(tools.saturation_of), preset, saturation)
            button.click(shown(tools.colorize), [photo, preset, saturation, hints],
                         [result, status])
        with gr.Tab("Upscale", id="upscale"):
            with gr.Row():
                with gr.Column():
                    photo = gr.File(label="Photo", file_types=image_types,
                                    elem_id="upscale-photo")
                    scale = gr.Radio(list(SCALES), value=3, label="Factor (FSRCNN preset)",
                                     elem_id="upscale-scale")
                    button = gr.Button("Upscale", variant="primary", elem_id="upscale-button")
                result, status = _result_column(gr, "upscale", "Upscaled")
            button.click(shown(tools.upscale), [photo, scale], [result, status])
        with gr.Tab("Codec", id="codec"):
            encoded = gr.State(None)
            with gr.Row():
                with gr.Column():
                    photo = gr.File(label="Colour photo to encode", file_types=image_types,
                                    elem_id="codec-photo")
                    encode = gr.Button("Encode", variant="primary", elem_id="codec-encode")
                    gray_file = gr.File(label="Or a koala grayscale to decode",
                                        file_types=image_types, elem_id="codec-gray")
                    decode = gr.Button("Decode", elem_id="codec-decode")
                with gr.Column():
                    gray = gr.Image(label="Grayscale (8-bit PNG: it hides the colour)",
                                    type="numpy", format="png", interactive=False,
                                    elem_id="codec-grayscale")
                    restored = gr.Image(label="Decoded colour", type="numpy", format="png",
                                        interactive=False, elem_id="codec-restored")
                    status = gr.Markdown(elem_id="codec-status")

            def encode_and_keep(path):
                out, line = tools.encode(path)
                return out, out, line

            def decode_upload_or_kept(path, kept):
                if path:
                    return tools.decode(path)
                if kept is None:
                    from koala.core.errors import KoalaError

                    raise KoalaError("nothing to decode: encode a photo first, or drop a "
                                     "koala grayscale on the box")
                return tools.decode(kept)

            encode.click(shown(encode_and_keep), photo, [gray, encoded, status])
            decode.click(shown(decode_upload_or_kept), [gray_file, encoded], [restored, status])
    return page


def main(argv) -> int:
    fv, args = common.parse(argv, define_flags, doc=__doc__)
    if args:
        return common.error(f"the app takes no arguments, got {' '.join(args)}")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no telemetry calls
    try:
        import gradio as gr
    except ImportError:
        return common.error("the app needs Gradio: pip install koala[app]")
    tools = Tools(max_pixels=fv.max_pixels)
    page = build(tools)
    print(f"koala app on http://{fv.host}:{fv.port} (Ctrl-C stops it)", flush=True)
    page.queue(default_concurrency_limit=1).launch(
        server_name=fv.host, server_port=fv.port, max_file_size=f"{fv.max_upload_mb}mb",
        show_error=True, inbrowser=False, quiet=True, share=False, ssr_mode=False,
        theme=gr.themes.Default(font=FONTS))
    return 0


run = functools.partial(common.run, main)  # the console script


if __name__ == "__main__":
    run()
