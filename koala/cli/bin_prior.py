r"""Computes the ab bin prior of a colour record set, for class rebalancing (SPEC §5).

  python data_prep/bin_prior.py --records=RECORDS [--output=RECORDS/ab_prior.npz] \
      [--split=train] [--max_examples=N] [--sigma=5] [--lam=0.5] [--noskip_white]

Also runnable as ``python -m koala.bin_prior``. What it counts and writes:
:mod:`koala.data.bin_prior`. Exit status: 0 on success, 2 with a one-line ``error:`` for
missing, corrupt or colourless records (or nothing to count).
"""

from __future__ import annotations

import functools
import os

from absl import flags

from koala.cli import common

PRIOR_FILE = "ab_prior.npz"  # koala.data.bin_prior.PRIOR_FILE, without importing TensorFlow


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("records", None, "Colour records: a directory, a shard pattern or file.",
                        flag_values=fv)
    flags.DEFINE_string("output", None, f"The .npz to write. Default: RECORDS/{PRIOR_FILE} "
                        "(when --records is a directory).", flag_values=fv)
    flags.DEFINE_string("split", "train", "Split to count (the prior is a training statistic).",
                        flag_values=fv)
    flags.DEFINE_integer("max_examples", None, "Count at most this many images (default: all).",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_float("sigma", None, "Gaussian σ smoothing the prior, ab units (default and "
                       "Zhang et al.: 5).", lower_bound=0.0, flag_values=fv)
    flags.DEFINE_float("lam", None, "λ of the rebalancing weights (default and Zhang et al.: "
                       "0.5).", lower_bound=0.0, upper_bound=1.0, flag_values=fv)
    flags.DEFINE_enum("rule", "nearest", ["nearest", "adjacent"], "In-gamut rule of the bins "
                      "(koala.ops.colorbins.ab_bins): nearest (262 bins) or adjacent (309).",
                      flag_values=fv)
    flags.DEFINE_bool("skip_white", True, "Leave out pure white pixels (L*=100, ab=0): no colour "
                      "information, and mostly the padding of fit=pad records.", flag_values=fv)
    flags.DEFINE_bool("progress", True, "Show a progress bar.", flag_values=fv)


def main(argv) -> int:
    fv, rest = common.parse(argv, define_flags, doc=__doc__, required=("records",))
    if rest:
        return common.error(f"unexpected arguments: {rest}")
    import numpy as np

    from koala.core.errors import KoalaError
    from koala.data.bin_prior import PriorConfig, compute_prior, save_prior

    output = fv.output
    if output is None:
        if not os.path.isdir(fv.records):
            return common.error(f"give --output (--records {fv.records} is not a directory)")
        output = os.path.join(fv.records, PRIOR_FILE)
    optional = {k: fv[k].value for k in ("sigma", "lam") if fv[k].value is not None}
    config = PriorConfig(records=fv.records, split=fv.split, max_examples=fv.max_examples,
                         rule=fv.rule, skip_white=fv.skip_white, progress=fv.progress,
                         **optional)
    try:
        prior = compute_prior(config)
    except KoalaError as e:
        return common.error(str(e))
    try:
        save_prior(output, prior)
    except OSError as e:
        return common.error(f"cannot write {output}: {e.strerror or e}")
    top = np.argsort(prior.counts)[::-1][:3]
    frequent = ", ".join(f"({a:.0f}, {b:.0f}) {prior.counts[i] / prior.pixels:.1%}"
                         for i, (a, b) in zip(top, prior.bins[top], strict=True))
    print(f"ab prior: {prior.examples} images, {prior.pixels} pixels "
          f"({prior.skipped_white} white skipped), {int(np.count_nonzero(prior.counts))}/"
          f"{len(prior.bins)} bins used; most common {frequent}; weights "
          f"{prior.weights.min():.3g}..{prior.weights.max():.3g} -> {output}")
    return 0


run = functools.partial(common.run, main)  # the console script


if __name__ == "__main__":
    run()
