"""The record build as an Apache Beam pipeline: ``build_records --runner=beam``.

The same stages as the local driver (:mod:`koala.data.build.writer`), each the same function,
as Beam transforms, so one pipeline runs on one machine (the DirectRunner, the default) or on
a cluster (Dataflow, Flink, Spark: ``--beam_options``, see docs/scaling.md)::

    listing (the driver)            find_images, sorted relative paths, the classes
    -> Prepare (ParDo)              writer.prepare: load, fit, Lab/PNG, stored RGB;
                                    bad files -> the "skipped" side output
    -> Embed (RunInference)         a ModelHandler around koala.ops.embedder.Embedder:
                                    batches of --batch_size, the model loaded once per worker
    -> Serialize (Map)              writer.serialize: one tf.train.Example per image
    -> WriteToTFRecord per split    train-SSSSS-of-NNNNN.tfrecord, N as the local build's plan
    -> manifest.json (the driver)   writer.make_manifest over the shards (records, sha256),
                                    the skipped files (path, reason) and the field sizes

The split is the local build's (:func:`koala.data.build.plan.split_of`, a hash of the relative
path) and so is the number of shards per split; which example lands in which shard of a split
is Beam's choice, so shards hold the same examples as a local build's only as a whole.
``records.resolve`` and the training pipelines read the result as any build. Beam retries and
rebalances work itself: ``--resume`` and ``--num_workers`` (koala's hand-made distribution)
are for the local runner. The shards are written by Beam's sink (into a temporary folder,
renamed when the pipeline finishes); the manifest is written last, so a folder with a manifest
holds a finished build.

``apache-beam`` is an optional extra (``pip install koala[beam]``).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import time

import numpy as np
import tensorflow as tf

from koala.core.errors import KoalaError, RecordsError
from koala.core.io import LOCK_FILE, exclusive
from koala.data.build import plan as plan_lib
from koala.data.build.plan import COMPRESSIONS, MANIFEST, SPLITS, BuildConfig, BuildResult
from koala.data.build.writer import (
    Builder,
    Skipped,
    color_fields_of,
    make_manifest,
    prepare,
    serialize,
)
from koala.ops import embedder as embedder_lib
from koala.ops.images import find_images, is_image_file

log = logging.getLogger(__name__)

SUMMARY = "beam-summary"  # in the state folder: the skipped files and the field sizes


class _QuietOptionalClients(logging.Filter):
    """Drops Beam's import-time note that Google Cloud's clients are missing: irrelevant to a
    pipeline that names no GCP service (Dataflow installs them on its workers)."""

    def filter(self, record):
        return not record.getMessage().startswith("apitools not found")


def _import_beam():
    root = logging.getLogger()
    if not any(isinstance(f, _QuietOptionalClients) for f in root.filters):
        root.addFilter(_QuietOptionalClients())
    try:
        import apache_beam as beam
    except ImportError as e:
        raise KoalaError("--runner=beam needs Apache Beam: pip install 'koala[beam]' "
                         f"(apache-beam 2.77, with pillow<13 and protobuf<7) ({e})") from None
    return beam


def _check(config: BuildConfig) -> None:
    if config.resume:
        raise KoalaError("--resume is for --runner=local; Beam retries failed work itself: "
                         "run the same command with --overwrite to rebuild")
    if config.num_workers > 1:
        raise KoalaError("--num_workers/--worker_index split a local build by hand; with "
                         "--runner=beam the runner spreads the work (--beam_options)")


def build(config: BuildConfig, flags: dict | None = None,
          beam_options: list[str] | tuple = ()) -> BuildResult:
    """Runs the build as a Beam pipeline with ``beam_options`` (``["--runner=DirectRunner"]``
    by default); returns what :func:`koala.data.build.build` returns."""
    _check(config)
    beam = _import_beam()
    start = time.monotonic()
    if not tf.io.gfile.isdir(config.input_dir):
        raise RecordsError(f"input_dir {config.input_dir} is not a directory")
    try:
        tf.io.gfile.makedirs(config.output_dir)
    except tf.errors.OpError as e:
        raise RecordsError(f"cannot create --output_dir {config.output_dir}: "
                           f"{e.message}") from None
    with exclusive(config.output_dir, "another build_records run", name=LOCK_FILE):
        builder = Builder(config, flags)
        builder._prepare_output()  # the local rules: --overwrite or refuse, stale .tmp files
        found = list_images(config.input_dir)
        classes = (sorted({n.split("/")[0] for n in found if "/" in n})
                   if config.labels_from else [])
        plans = plan_lib.plan_shards(found, config)
        counts = collections.Counter(p.split for p in plans)
        summary = _run_pipeline(beam, config, found, classes, counts, builder.state_dir,
                                list(beam_options))
        manifest = make_manifest(
            config, _shard_states(config, counts), _embedder_info(config, summary), classes,
            total_inputs=len(found), elapsed=time.monotonic() - start, flags=flags or {},
            skipped=summary["skipped"], field_bytes=summary["field_bytes"],
            runner={"name": "beam", "options": list(beam_options)})
        plan_lib.write_json(os.path.join(config.output_dir, MANIFEST), manifest)
    ok, message = plan_lib.verdict(manifest, config.max_skipped_fraction, config.input_dir)
    return BuildResult(manifest, ok, message, {})


def list_images(input_dir: str) -> dict[str, str]:
    """{relative posix path: path} of the images under ``input_dir``: a local folder
    (:func:`koala.ops.images.find_images`) or a ``tf.io.gfile`` URL (gs://, s3://, hdfs://),
    walked the same way (dot names skipped, sorted)."""
    if "://" not in input_dir:
        return {p.relative_to(input_dir).as_posix(): str(p) for p in find_images(input_dir)}
    root = input_dir.rstrip("/")
    found = {}
    for folder, subfolders, files in tf.io.gfile.walk(root):
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and is_image_file(name):
                path = f"{folder.rstrip('/')}/{name}"
                found[path[len(root) + 1:]] = path
    return dict(sorted(found.items()))


class _PrepareFn:
    """``writer.prepare`` as a DoFn body: Prepared downstream, Skipped to "skipped"."""

    def __init__(self, config: BuildConfig, embed_size: int | None):
        self.config, self.embed_size = config, embed_size

    def __call__(self, item):
        import apache_beam as beam

        name, path = item
        result = prepare(path, name, self.config, self.embed_size)
        if isinstance(result, Skipped):
            yield beam.pvalue.TaggedOutput("skipped", {"path": plan_lib.printable(result.name),
                                                       "reason":
                                                           plan_lib.printable(result.reason)})
        else:
            yield result


def _embedder_handler(config: BuildConfig):
    """A RunInference ModelHandler: Prepared -> PredictionResult(Prepared, embedding)."""
    from apache_beam.ml.inference.base import ModelHandler, PredictionResult

    class EmbedderHandler(ModelHandler):
        def __init__(self):
            super().__init__(min_batch_size=1, max_batch_size=config.batch_size)

        def load_model(self):  # once per worker process
            return embedder_lib.Embedder(config.embedder, config.embedder_weights,
                                         batch_size=config.batch_size, fit=config.fit)

        def run_inference(self, batch, model, inference_args=None):
            vectors = model.embed(np.stack([r.embed_square for r in batch]))
            return [PredictionResult(r, v) for r, v in zip(batch, vectors, strict=True)]

    return EmbedderHandler()


def _serialized(pair, classes, val_fraction):
    """(Prepared, embedding or None) -> (split, example bytes, field sizes, embedding dim)."""
    r, vector = pair
    fields = {} if vector is None else color_fields_of(r, vector)
    data, sizes = serialize(r, fields, classes or None)
    dim = 0 if vector is None else int(np.asarray(vector).shape[-1])
    return plan_lib.split_of(r.name, val_fraction), data, sizes, dim


def _size_summer():
    """A CombineFn: (field sizes, embedding dim) rows -> {"field_bytes": sums, "dims": [...]}."""
    import apache_beam as beam

    class SumSizes(beam.CombineFn):
        def create_accumulator(self):
            return collections.Counter(), set()

        def add_input(self, acc, row):
            sizes, dim = row
            acc[0].update(sizes)
            acc[1].add(dim)
            return acc

        def merge_accumulators(self, accs):
            total, dims = collections.Counter(), set()
            for sizes, seen in accs:
                total.update(sizes)
                dims |= seen
            return total, dims

        def extract_output(self, acc):
            return {"field_bytes": dict(acc[0]), "dims": sorted(acc[1])}

    return SumSizes()


def _run_pipeline(beam, config, found, classes, counts, state_dir, options) -> dict:
    from apache_beam.ml.inference.base import RunInference
    from apache_beam.options.pipeline_options import PipelineOptions

    color = "color" in config.groups
    embed_size = embedder_lib.EMBEDDERS[config.embedder].input_size if color else None
    summary_prefix = os.path.join(state_dir, SUMMARY)
    suffix = ".tfrecord.gz" if config.compression == "gzip" else ".tfrecord"
    compression = (beam.io.filesystem.CompressionTypes.GZIP if config.compression == "gzip"
                   else beam.io.filesystem.CompressionTypes.UNCOMPRESSED)
    with beam.Pipeline(options=PipelineOptions(options or ["--runner=DirectRunner"])) as p:
        listed = p | "List" >> beam.Create(sorted(found.items()))
        prepared = listed | "Prepare" >> beam.ParDo(_PrepareFn(config, embed_size)).with_outputs(
            "skipped", main="good")
        good = prepared.good
        if color:
            pairs = (good | "Embed" >> RunInference(_embedder_handler(config))
                     | "Unwrap" >> beam.Map(lambda result: (result.example, result.inference)))
        else:
            pairs = good | "NoEmbedding" >> beam.Map(lambda r: (r, None))
        rows = pairs | "Serialize" >> beam.Map(_serialized, classes, config.val_fraction)
        for split in SPLITS:
            if counts[split]:
                (rows | f"Only{split}" >> beam.Filter(lambda row, s=split: row[0] == s)
                 | f"Bytes{split}" >> beam.Map(lambda row: row[1])
                 | f"Write{split}" >> beam.io.WriteToTFRecord(
                     os.path.join(config.output_dir, split), file_name_suffix=suffix,
                     num_shards=counts[split], shard_name_template="-SSSSS-of-NNNNN",
                     compression_type=compression))
        sizes = (rows | "Sizes" >> beam.Map(lambda row: (row[2], row[3]))
                 | "SumSizes" >> beam.CombineGlobally(_size_summer()))
        skipped = prepared.skipped | "Skips" >> beam.combiners.ToList()
        (sizes | "Summary" >> beam.Map(
            lambda s, skips: json.dumps({**s, "skipped": sorted(skips, key=lambda x: x["path"])}),
            skips=beam.pvalue.AsSingleton(skipped))
         | "WriteSummary" >> beam.io.WriteToText(summary_prefix, num_shards=1,
                                                 shard_name_template=""))
    with tf.io.gfile.GFile(summary_prefix) as f:
        summary = json.loads(f.read())
    tf.io.gfile.remove(summary_prefix)
    return summary


def _shard_states(config: BuildConfig, counts) -> list[dict]:
    """Each written shard's file, split, record count (read back), size and sha256."""
    shards = []
    for split in SPLITS:
        for i in range(counts[split]):
            name = plan_lib.ShardPlan(split, i, counts[split], ()).filename(config.compression)
            path = os.path.join(config.output_dir, name)
            records = sum(1 for _ in tf.data.TFRecordDataset(
                path, compression_type=COMPRESSIONS[config.compression]))
            shards.append({"file": name, "split": split, "records": records,
                           "bytes": tf.io.gfile.stat(path).length,
                           "sha256": plan_lib.file_sha256(path)})
    return shards


def _embedder_info(config: BuildConfig, summary) -> dict | None:
    """What :meth:`Embedder.describe` gives, without building the embedder in the driver."""
    if "color" not in config.groups:
        return None
    dims = [d for d in summary["dims"] if d]
    return embedder_lib.describe_embedder(config.embedder, config.embedder_weights, config.fit,
                                          dims[0] if dims else None)
