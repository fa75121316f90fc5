r"""Lists koala's presets (trained models shipped in koala/presets), or adds one.

  python -m koala.presets                # the table: name, family, scale, size, metrics
  python -m koala.presets add NAME --from=best.keras --family=sr --flagfile=F \
      --eval=EVAL_DIR/metrics.json --wall_time_s=N [--recommended] [--train_data=...]

``add`` copies the model into koala/presets/NAME.keras and writes its entry in presets.json
(sha256, size, parameter count, scale, the training command and flagfile, wall time, this
machine's hardware, and the model's mean metrics from a ``koala.evaluate`` report next to the
report's baseline), replacing an entry of the same name. Both writes are atomic.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import re

from absl import flags

from koala.cli import common

BASELINES = {"sr": "bicubic", "colorize": "gray", "codec": "luma"}


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("from", None, "add: the trained .keras file.", flag_values=fv)
    flags.DEFINE_enum("family", None, ["sr", "colorize", "codec"], "add: the model's family.",
                      flag_values=fv)
    flags.DEFINE_string("flagfile_used", None, "add: the experiments/*.flags that trained it.",
                        flag_values=fv)
    flags.DEFINE_string("eval", None, "add: a koala.evaluate metrics.json that scored it.",
                        flag_values=fv)
    flags.DEFINE_string("eval_command", None, "add: the koala.evaluate command that wrote "
                        "--eval.", flag_values=fv)
    flags.DEFINE_string("method", None, "add: the model's name in --eval (default: its only "
                        "method other than the baseline).",
                        flag_values=fv)
    flags.DEFINE_integer("wall_time_s", None, "add: training wall time in seconds.",
                         lower_bound=0, flag_values=fv)
    flags.DEFINE_string("train_command", None, "add: the exact training command (default: "
                        "timeout 3600 python -m koala.train --flagfile=FLAGFILE).",
                        flag_values=fv)
    flags.DEFINE_string("train_data", "../shared/corpus/train", "add: the training photos.",
                        flag_values=fv)
    flags.DEFINE_string("notes", "", "add: anything else a user should know.", flag_values=fv)
    flags.DEFINE_bool("recommended", False, "add: the family's (and scale's) default.",
                      flag_values=fv)
    flags.DEFINE_string("embedder_weights", None, "add, colorize: the embedder weights file "
                        "the model needs, shipped beside it (copied once, shared by the "
                        "presets that use the same file) so the preset runs offline.",
                        flag_values=fv)
    flags.DEFINE_string("embedder_license", None, "add, colorize: the licence and origin of "
                        "--embedder_weights, recorded with it.", flag_values=fv)
    flags.DEFINE_float("saturation", None, "add, colorize: the default saturation, picked "
                       "on held-out photos.", lower_bound=0.0, flag_values=fv)
    flags.DEFINE_enum("refine", None, ["none", "guided"], "add, colorize: the default chroma "
                      "refinement, picked on held-out photos.", flag_values=fv)
    flags.DEFINE_float("temperature", None, "add, colorize (classification head): the "
                       "default annealed-mean temperature, picked on held-out photos.",
                       flag_values=fv)


def hardware() -> str:
    cores = os.cpu_count()
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{cores}-core CPU{' (' + model + ')' if model else ''}, {platform.machine()}, no GPU"


def _metric_summary(p) -> str:
    m = p.info.get("metrics") or {}
    model, base = m.get("model") or {}, m.get("baseline") or {}
    key = next((k for k in ("psnr_y", "psnr", "psnr_rgb") if k in model), None)
    if key is None:
        return "-"
    delta = model[key] - base[key] if key in base else None
    return (f"{key} {model[key]:.2f}" + (f" ({m.get('baseline_name', 'baseline')} "
            f"{base[key]:.2f}, {delta:+.2f} dB)" if delta is not None else ""))


def table(presets) -> str:
    rows = [("name", "family", "scale", "params", "size", "corpus/val", "default")]
    for p in presets.values():
        rows.append((p.name, p.family, f"x{p.scale}" if p.scale else "-", f"{p.parameters:,}",
                     f"{p.size / 1024:.0f} KB", _metric_summary(p),
                     "yes" if p.recommended else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def _run_facts(model_path) -> dict:
    """What the run.json beside a workdir's model says of where its weights started
    (``koala.train --init_from``): ``{"init_from": {"path", "sha256"}}``, or nothing."""
    path = os.path.join(os.path.dirname(os.path.abspath(model_path)), "run.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        init = json.load(f).get("init_from")
    return {"init_from": init} if init else {}


def add(fv, name: str) -> int:
    import shutil

    from koala import presets
    from koala.core.io import atomic_write, atomic_write_json

    missing = [f for f in ("from", "family", "flagfile_used", "eval", "wall_time_s")
               if fv[f].value is None]
    if missing:
        return common.error(f"add needs {', '.join('--' + m for m in missing)}")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        return common.error(f"{name!r} is not a valid preset name (lower-case letters, digits, _)")
    model = presets.load(fv["from"].value)
    with open(fv.eval, encoding="utf-8") as f:
        report = json.load(f)
    baseline = BASELINES[fv.family]
    methods = [m for m in report["methods"] if m != baseline]
    method = fv.method or (methods[0] if len(methods) == 1 else None)
    if method not in report["mean"]:
        return common.error(f"--method: pick one of {', '.join(methods)}")
    file = f"{name}.keras"
    target = presets.DIR / file
    atomic_write(target, lambda tmp: shutil.copyfile(fv["from"].value, tmp), fsync=True)
    extra = {}
    if fv.embedder_weights:
        weights = presets.DIR / os.path.basename(fv.embedder_weights)
        if not weights.is_file() or presets.sha256(weights) != presets.sha256(
                fv.embedder_weights):
            atomic_write(weights, lambda tmp: shutil.copyfile(fv.embedder_weights, tmp),
                         fsync=True)
        extra["embedder_weights"] = {"file": weights.name, "size": weights.stat().st_size,
                                     "sha256": presets.sha256(weights),
                                     "license": fv.embedder_license or ""}
    decoding = {k: fv[k].value for k in ("saturation", "temperature", "refine")
                if fv[k].value is not None}
    if decoding:
        extra["decoding"] = decoding
    with open(fv.flagfile_used, encoding="utf-8") as f:
        flagfile_text = f.read()
    entry = presets.Preset(
        name=name, family=fv.family, file=file, sha256=presets.sha256(target),
        size=target.stat().st_size, parameters=int(model.count_params()),
        scale=getattr(getattr(model, "config", None), "scale", None),
        recommended=fv.recommended,
        info={
            "model": type(model).__name__,
            "training": {
                "data": fv.train_data,
                "command": fv.train_command or (
                    f"timeout 3600 python -m koala.train --flagfile={fv.flagfile_used}"),
                "flagfile": fv.flagfile_used, "flagfile_text": flagfile_text,
                "wall_time_s": fv.wall_time_s, "hardware": hardware(),
                **_run_facts(fv["from"].value),
            },
            "metrics": {
                "data": report.get("images_dir") or "../shared/corpus/val",
                "images": report["images"], "command": fv.eval_command,
                "model": report["mean"][method], "baseline_name": baseline,
                "baseline": report["mean"][baseline],
            },
            **extra,
            "notes": fv.notes,
        })
    index = presets.index(presets.INDEX)
    index[name] = entry
    atomic_write_json(presets.INDEX, {"format": 1,
                                      "presets": [p.as_dict() for p in index.values()]})
    print(f"added preset {name}: {file} ({entry.size} bytes, sha256 {entry.sha256[:12]}...)")
    return 0


def main(argv) -> int:
    fv, args = common.parse(argv, define_flags, doc=__doc__)
    from koala import presets
    from koala.core.errors import KoalaError

    try:
        if not args:
            index = presets.index()
            if not index:
                print("no presets are shipped in this copy of koala")
                return 0
            print(table(index))
            return 0
        if args[0] == "add" and len(args) == 2:
            return add(fv, args[1])
    except BrokenPipeError:
        raise  # common.call ends quietly
    except (KoalaError, OSError, ValueError, KeyError) as e:
        return common.error(str(e))
    return common.error("usage: python -m koala.presets [add NAME --from=...]")


run = functools.partial(common.run, main)  # the console script


if __name__ == "__main__":
    run()
