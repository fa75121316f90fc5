"""What koala's image-in, image-out tools (colorize, upscale, ...) share: pairing inputs with
output files, and the per-file loop that reports bad files and keeps going."""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Callable

from koala.core.errors import ImageError, KoalaError
from koala.core.progress import Progress
from koala.ops import images


def output_paths(inputs, output_dir, suffix: str, *, companions=(), verb: str = "process",
                 missing: list | None = None) -> list[tuple[pathlib.Path, pathlib.Path]]:
    """``(input file, output PNG)`` pairs for a command line's inputs.

    A file maps to ``output_dir/<stem><suffix>.png``; a folder's images (found recursively by
    :func:`koala.ops.images.find_images`) keep their sub-folders under ``output_dir``. The same
    file named twice is processed once. ``companions`` are other suffixes each output writes
    beside it (``"_grid"`` -> ``<stem><suffix>_grid.png``); they are checked for clashes too.

    ``missing``: a list that collects the inputs that do not exist, which are then left out
    like a bad file (:func:`process` reports them) instead of stopping everything.

    Raises:
      KoalaError: an input does not exist (without ``missing``), two inputs would write the
        same output, or an output would overwrite an input.
    """
    output_dir = pathlib.Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():  # said once, not once per image
        raise KoalaError(f"--output_dir {output_dir} is a file, not a folder")
    seen: dict[pathlib.Path, pathlib.Path] = {}
    pairs = []
    for item in inputs:
        root = pathlib.Path(item)
        if missing is not None and not root.exists():
            missing.append(root)
            continue
        for path in images.find_images(root):
            if path.resolve() in seen:
                continue
            seen[path.resolve()] = path
            rel = path.relative_to(root).parent if root.is_dir() else pathlib.Path()
            pairs.append((path, output_dir / rel / f"{path.stem}{suffix}.png"))
    owners: dict[pathlib.Path, pathlib.Path] = {}
    for path, out in pairs:
        for target in (out, *(out.with_name(out.stem + c + ".png") for c in companions)):
            key = target.resolve()
            if key in seen:
                raise KoalaError(f"{target} would overwrite the input {seen[key]}")
            if key in owners and owners[key] != path:
                raise KoalaError(f"{owners[key]} and {path} would both be written to {target}; "
                                 f"rename one or {verb} them separately")
            owners[key] = path
    return pairs


def no_images_message(inputs) -> str:
    """The error for command-line inputs that hold no image file."""
    return (f"no input images found in {' '.join(map(str, inputs))} "
            f"(extensions: {' '.join(images.IMAGE_EXTENSIONS)})")


def process_and_report(pairs, handle: Callable, *, desc: str, done_verb: str, output_dir,
                       max_pixels: int, progress: bool = True, missing=()) -> int:
    """:func:`process`, then ``<done_verb> N, failed M -> output_dir`` on stdout; returns the
    tool's exit status: 1 if any image failed, else 0."""
    done, failed = process(pairs, handle, desc=desc, max_pixels=max_pixels, progress=progress,
                           missing=missing)
    print(f"{done_verb} {done}, failed {failed} -> {output_dir}")
    return 1 if failed else 0


def process(pairs, handle: Callable, *, desc: str, max_pixels: int,
            progress: bool = True, missing=()) -> tuple[int, int]:
    """Loads each input and calls ``handle(loaded_image, output_path)``, which writes.

    A bad input (:class:`koala.core.errors.ImageError`) or a failed write is reported on stderr as
    ``path: reason`` and skipped; the loop goes on. Each of the ``missing`` inputs
    (:func:`output_paths`) is reported and counted as failed the same way. Returns
    (done, failed).
    """
    for path in missing:
        print(f"{path}: no such file or folder", file=sys.stderr)
    done, failed = 0, len(missing)
    with Progress(len(pairs), desc, "img", enabled=progress) as bar:
        for path, out in pairs:
            try:
                loaded = images.load_image(path, max_pixels=max_pixels)
                out.parent.mkdir(parents=True, exist_ok=True)
                handle(loaded, out)
                done += 1
            except ImageError as e:
                failed += 1
                print(f"{e.path}: {e.reason}", file=sys.stderr)
            except OSError as e:
                failed += 1
                print(f"{path}: cannot write {out}: {e.strerror or e}", file=sys.stderr)
            bar.update(1)
    return done, failed
