"""Builds sharded TFRecords from a folder of images (the library behind
``koala.cli.build_records``).

* :mod:`~koala.data.build.plan`: the settings (:class:`BuildConfig`), which image goes to
  which split, part and shard, and the output folder's layout;
* :mod:`~koala.data.build.writer`: :func:`build`, the per-image work and the shard writer;
* :mod:`~koala.data.build.merge`: :func:`merge`, one manifest over a distributed build's parts.

Robustness:
  * A bad image is skipped and reported (path and reason, in the manifest), never fatal.
  * The train/val split of an image is a hash of its relative path: stable across re-runs and
    when images are added.
  * Shards are written under a temporary name, fsynced and renamed when complete, then a small
    per-shard state file records their checksum. ``resume=True`` keeps every finished shard
    whose inputs and settings are unchanged, and rebuilds the rest. No final shard is ever
    half-written.
  * ``manifest.json`` (written atomically, last) lists counts, shards with record counts and
    sha256, skipped files, the embedder and weights, all flags and the koala version.

Distributed builds (``num_workers > 1``): worker ``i`` of ``N`` builds the images whose
:func:`part_of` (a hash of the relative path, like the split) is ``i``, so each worker decides
alone, the parts are disjoint, their union is the single build's input, and adding images
moves no other image between parts. All workers write into the same ``output_dir`` (a local or
shared folder, or a ``tf.io.gfile`` URL such as ``gs://``), each touching only files tagged
with its part, ``w00001-of-00003``: shards ``train-w00001-of-00003-00000-of-00002.tfrecord``
(they match ``train-*`` like a single build's, so :func:`koala.data.records.resolve` reads the
merged result unchanged), state in ``.build/w00001-of-00003/`` and, written last,
``manifest-w00001-of-00003.json``. :func:`merge` then writes the one ``manifest.json``. A
worker's run deletes a merged ``manifest.json`` it would make stale; run the merge again. With
``num_workers == 1`` (the default) a build is a single build.
"""

from koala.data.build import plan
from koala.data.build.merge import merge
from koala.data.build.plan import *  # noqa: F403  (its __all__: settings, layout, hashing)
from koala.data.build.writer import (
    Builder,
    Prepared,
    Skipped,
    _ShardWriter,  # tests patch its commit to simulate a kill
    build,
    encode_color,
    prepare,
)

__all__ = [*plan.__all__, "Builder", "Prepared", "Skipped", "_ShardWriter", "build",
           "encode_color", "merge", "prepare"]
