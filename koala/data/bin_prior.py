r"""The ab bin prior of a colour record set, for class rebalancing (SPEC §5, Zhang et al. 2016).

The command line is :mod:`koala.cli.bin_prior`. Reads the records' ab channels (at the stored
S x S, no crop or flip) through :func:`koala.data.pipelines.colorization_dataset`, counts the
pixels per ab bin (:func:`koala.ops.colorbins.bin_counts`), smooths the distribution
(:func:`koala.ops.colorbins.bin_prior`) and writes, atomically, an ``.npz`` with ``bins``
(Q, 2), ``counts`` (Q,), ``prior`` (Q,, the smoothed p̃) and ``weights`` (Q,, the
rebalancing weights for --lam), plus the settings that made them. :func:`load_prior` reads it
back and checks that its bins are :func:`koala.ops.colorbins.ab_bins`'s.

Pure white pixels (L* = 100, a*b* = 0) are skipped unless --noskip_white: at L* = 100 white
is the only sRGB colour, so they say nothing about the colour distribution, and in records
built with ``fit=pad`` (the default) most of them are the white padding around the photo,
which would inflate the (0, 0) bin. The number skipped is recorded.

Exit status: 0 on success, 2 with a one-line ``error:`` for missing, corrupt or colourless
records (or nothing to count).
"""

from __future__ import annotations

import dataclasses
import io
import os
import zipfile

import numpy as np
import tensorflow as tf

from koala.core.errors import KoalaError
from koala.core.io import atomic_write
from koala.core.progress import Progress
from koala.data import pipelines, records
from koala.ops import color, colorbins

__all__ = ["PRIOR_FILE", "AbPrior", "PriorConfig", "compute_prior", "count_records",
           "load_prior", "save_prior"]

PRIOR_FILE = "ab_prior.npz"
"""Default file name, beside the records' shards."""
_ARRAYS = ("bins", "counts", "prior", "weights")
_BATCH = 16


@dataclasses.dataclass(frozen=True)
class PriorConfig:
    """What :func:`compute_prior` reads and how it counts."""

    records: str
    split: str = "train"
    max_examples: int | None = None  # None: every example of the split
    grid: float = colorbins.GRID
    rule: str = "nearest"  # colorbins.GAMUT_RULES
    sigma: float = colorbins.SIGMA
    lam: float = colorbins.REBALANCE_LAMBDA
    skip_white: bool = True
    progress: bool = True

    def __post_init__(self):
        if self.max_examples is not None and self.max_examples < 1:
            raise ValueError(f"max_examples must be >= 1, got {self.max_examples}")
        if self.rule not in colorbins.GAMUT_RULES:
            raise ValueError(f"rule must be one of {colorbins.GAMUT_RULES}, got {self.rule!r}")
        if not (self.grid > 0 and self.sigma >= 0 and 0.0 <= self.lam <= 1.0):
            raise ValueError("need grid > 0, sigma >= 0 and lam in [0, 1]")


@dataclasses.dataclass(frozen=True, eq=False)
class AbPrior:
    """A record set's bin statistics, as written by :func:`save_prior`."""

    bins: np.ndarray  # float32 (Q, 2), colorbins.ab_bins(grid, rule)
    counts: np.ndarray  # float64 (Q,), pixels per bin (halves on ties)
    prior: np.ndarray  # float64 (Q,), p̃: counts normalised and smoothed with sigma
    weights: np.ndarray  # float64 (Q,), rebalancing weights for lam, E_p̃[w] = 1
    grid: float
    rule: str
    sigma: float
    lam: float
    examples: int  # images read
    pixels: int  # pixels counted
    skipped_white: int  # pure white pixels left out
    split: str
    records: str


def count_records(config: PriorConfig) -> tuple[np.ndarray, int, int, int]:
    """Counts the split's ab pixels per bin.

    Returns:
      ``(counts (Q,), examples, pixels, skipped_white)``.

    Raises:
      RecordsError (a KoalaError): no shards, a corrupt shard (named), records without the
        colour fields, or a record that can't be decoded.
    """
    bins = colorbins.ab_bins(config.grid, config.rule)
    total = records.resolve(config.records, config.split).num_records
    if config.max_examples is not None:
        total = min(total, config.max_examples) if total is not None else config.max_examples
    batch = min(_BATCH, config.max_examples or _BATCH)
    ds = pipelines.colorization_dataset(config.records, split=config.split, batch_size=batch,
                                        training=False)
    counts = np.zeros(len(bins))
    examples = pixels = skipped = 0
    try:
        with Progress(total, "ab prior", unit="img", enabled=config.progress) as bar:
            for inputs, ab in ds:
                take = len(ab)
                if config.max_examples is not None:
                    take = min(take, config.max_examples - examples)
                lightness = color.denormalize_l(inputs["l"][:take]).numpy()[..., 0]
                ab = color.denormalize_ab(ab[:take]).numpy()  # integers: the records' units
                keep = np.ones(lightness.shape, bool)
                if config.skip_white:
                    keep = ~((lightness >= 100.0 - 1e-3) & np.all(ab == 0, axis=-1))
                counts += colorbins.bin_counts([ab[keep]], bins)
                examples += take
                pixels += int(keep.sum())
                skipped += int(keep.size - keep.sum())
                bar.update(take)
                if examples == config.max_examples:
                    break
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        reason = e.message.split("[Op:")[0].strip().splitlines()[0]
        raise records.RecordsError(f"cannot read {config.records}: {reason}") from None
    return counts, examples, pixels, skipped


def compute_prior(config: PriorConfig) -> AbPrior:
    """Counts, the smoothed prior p̃ and the rebalancing weights of a record set.

    Raises:
      KoalaError: unreadable records (see :func:`count_records`) or no pixel to count.
    """
    counts, examples, pixels, skipped = count_records(config)
    if pixels == 0:
        raise KoalaError(f"no pixels to count in {config.records} (split {config.split!r}"
                         + (", all pure white)" if skipped else ")"))
    bins = colorbins.ab_bins(config.grid, config.rule)
    prior = colorbins.bin_prior(counts, bins, config.sigma)
    return AbPrior(bins=bins, counts=counts, prior=prior,
                   weights=colorbins.rebalancing_weights(prior, config.lam), grid=config.grid,
                   rule=config.rule, sigma=config.sigma, lam=config.lam, examples=examples,
                   pixels=pixels, skipped_white=skipped, split=config.split,
                   records=str(config.records))


def save_prior(path, prior: AbPrior) -> None:
    """Writes ``prior`` as an uncompressed .npz, atomically (a temporary name, then a rename).

    The folder is created.
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fields = {f.name: np.asarray(getattr(prior, f.name)) for f in dataclasses.fields(prior)}
    buffer = io.BytesIO()  # a file object: np.savez would append .npz to a name
    np.savez(buffer, **fields)
    atomic_write(path, buffer.getvalue())


def load_prior(path) -> AbPrior:
    """Reads a :func:`save_prior` file and checks its bins against ``ab_bins(grid, rule)``.

    Raises:
      KoalaError: missing or unreadable file, missing fields, or bins that differ from
        :func:`koala.ops.colorbins.ab_bins` (a prior made by another version of the bins).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise KoalaError(f"prior file not found: {path}")
    names = [f.name for f in dataclasses.fields(AbPrior)]
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [n for n in names if n not in data.files]
            if missing:
                raise KoalaError(f"{path} is not an ab prior file (no {', '.join(missing)})")
            values = {n: data[n] for n in names}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise KoalaError(f"unreadable prior file {path}: {e}") from None
    scalars = {n: values[n].item() for n in names if n not in _ARRAYS}
    prior = AbPrior(**{n: values[n] for n in _ARRAYS}, **scalars)
    try:
        expected = colorbins.ab_bins(prior.grid, prior.rule)
    except ValueError as e:
        raise KoalaError(f"{path}: {e}") from None
    if prior.bins.shape != expected.shape or not np.array_equal(prior.bins, expected):
        raise KoalaError(f"{path}: its {len(prior.bins)} bins are not ab_bins(grid={prior.grid}, "
                         f"rule={prior.rule!r}) ({len(expected)} bins): recompute the prior")
    q = len(expected)
    if any(getattr(prior, n).shape != (q,) for n in ("counts", "prior", "weights")):
        raise KoalaError(f"{path}: counts, prior and weights must have one value per bin ({q})")
    return prior
