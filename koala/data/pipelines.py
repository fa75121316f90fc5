"""tf.data input pipelines, one builder per model family.

Every builder reads a records directory, a shard pattern or a list of shards
(:func:`koala.data.records.resolve`), checks the shards (:func:`koala.data.records.verify`,
naming a corrupt one), then: parallel interleave over shards -> shuffle (serialized records,
so the buffer stays small) -> parallel parse and decode -> augmentation -> batch ->
``prefetch(AUTOTUNE)``.

``training=True`` shuffles and augments (random flip, random crop); ``training=False`` reads
in order, with no flip and a centre crop, so evaluation is repeatable.

Builders and what they yield:
  :func:`colorization_dataset`  ``({"l": (B, S, S, 1), "embedding": (B, D)}, ab (B, S, S, 2))``,
                                L and ab scaled to [-1, 1] (``koala.ops.color``).
  :func:`rgb_dataset`           ``(B, P, P, 3)`` sRGB patches in [0, 1] (the codec).
  :func:`sr_dataset`            ``(low_res, high_res)`` pairs made on the fly from the stored
                                RGB by :func:`bicubic_downscale`, so scale and patch size are
                                training choices, not build choices.
"""

from __future__ import annotations

import tensorflow as tf

from koala.data import features, records
from koala.ops import color

AUTOTUNE = tf.data.AUTOTUNE
SR_CHANNELS = ("y", "rgb")


def _read(source, split, *, groups, training, shuffle_buffer, seed, verify):
    """Resolved records -> dataset of parsed (still encoded) feature dicts."""
    recs = records.resolve(source, split)
    if recs.manifest and not set(groups) <= set(recs.groups):
        raise records.RecordsError(
            f"records in {recs.manifest_dir} hold groups {list(recs.groups)}, this pipeline "
            f"needs {list(groups)}: rebuild them with --groups including {list(groups)}")
    if verify:
        records.verify(recs)
    files = tf.data.Dataset.from_tensor_slices(list(recs.files))
    if training:
        files = files.shuffle(len(recs.files), seed=seed, reshuffle_each_iteration=True)
    ds = files.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type=recs.compression),
        cycle_length=min(len(recs.files), 16), block_length=1,
        num_parallel_calls=AUTOTUNE, deterministic=not training)
    if training and shuffle_buffer > 1:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    spec = features.feature_spec(groups)
    ds = ds.map(lambda s: tf.io.parse_single_example(s, spec), num_parallel_calls=AUTOTUNE,
                deterministic=not training)
    return ds, recs


def _finish(ds, batch_size, drop_remainder, repeat):
    if repeat:
        ds = ds.repeat()
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(AUTOTUNE)


# --- colorization ----------------------------------------------------------------------------


def decode_color_example(parsed: dict, *, embedding_dim: int | None = None) -> dict:
    """Parsed features -> {"l": (S, S, 1), "ab": (S, S, 2), "embedding": (D,)}, scaled."""
    return {
        "l": color.normalize_l(features.decode_l(parsed[features.L])),
        "ab": color.normalize_ab(features.decode_ab(parsed[features.AB])),
        "embedding": features.decode_embedding(parsed[features.EMBEDDING], embedding_dim),
    }


def _op_seed(seed: int | None, k: int) -> int | None:
    """The k-th random op's seed. Explicit op seeds keep augmentation reproducible, also when
    a distribution strategy clones the pipeline (a clone re-draws unseeded ops' seeds)."""
    return None if seed is None else seed + k


def augment_color(example: dict, *, crop_size: int | None, training: bool,
                  seed: int | None = None) -> dict:
    """Random (training) or centre crop to ``crop_size``, and a random left-right flip.

    L and ab get the same crop and flip; the embedding (of the whole image) is kept.
    """
    stack = tf.concat([example["l"], example["ab"]], axis=-1)  # (S, S, 3)
    if crop_size:
        if training:
            stack = tf.image.random_crop(stack, [crop_size, crop_size, 3],
                                         seed=_op_seed(seed, 1))
        else:
            stack = tf.image.resize_with_crop_or_pad(stack, crop_size, crop_size)
    if training:
        stack = tf.image.random_flip_left_right(stack, seed=_op_seed(seed, 2))
    return {"l": stack[..., :1], "ab": stack[..., 1:], "embedding": example["embedding"]}


CROPS_FROM = ("records", "rgb")


def rgb_crop_to_lab(rgb: tf.Tensor, *, crop_size: int, min_fraction: float,
                    seed: int | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """A random square of the full-resolution photo as the colorizer's input and target.

    The square's side is ``f`` times the photo's short side, ``f`` uniform in
    ``[min_fraction, 1]``, at a uniformly random place; it is resized (area-weighted when
    shrinking) to ``crop_size`` and randomly flipped. Returns normalised L (S, S, 1) and
    ab (S, S, 2) in [-1, 1].
    """
    shape = tf.shape(rgb)
    short = tf.cast(tf.minimum(shape[0], shape[1]), tf.float32)
    fraction = tf.random.uniform([], min_fraction, 1.0, seed=_op_seed(seed, 40))
    side = tf.maximum(1, tf.cast(tf.round(fraction * short), tf.int32))
    side = tf.minimum(side, tf.minimum(shape[0], shape[1]))
    crop = tf.image.random_crop(rgb, tf.stack([side, side, 3]), seed=_op_seed(seed, 41))
    crop = tf.image.resize(crop, [crop_size, crop_size], "bilinear", antialias=True)
    crop = tf.image.random_flip_left_right(tf.clip_by_value(crop, 0.0, 1.0),
                                           seed=_op_seed(seed, 42))
    lab = color.srgb_to_lab(crop)
    return color.normalize_l(lab[..., :1]), color.normalize_ab(lab[..., 1:])


def _whole_image(example: dict, crop_size: int | None) -> tuple[tf.Tensor, tf.Tensor]:
    """The record's whole (padded) image, resized to ``crop_size``: what inference feeds the
    network (the photo fitted into its square)."""
    stack = tf.concat([example["l"], example["ab"]], axis=-1)
    if crop_size:
        stack = tf.image.resize(stack, [crop_size, crop_size], "bilinear", antialias=True)
    return stack[..., :1], stack[..., 1:]


def colorization_dataset(source, *, split="train", batch_size=32, training=True,
                         crop_size=None, shuffle_buffer=1024, seed=None, verify=True,
                         drop_remainder=False, repeat=False, crops_from="records",
                         min_crop_fraction=0.4, whole_image_fraction=0.25,
                         labels=False) -> tf.data.Dataset:
    """Fusion-colorizer batches: ``({"l", "embedding"}, ab)``, all float32 in [-1, 1].

    ``crops_from="records"`` (the paper's data): random (training) or centre crops of the
    stored ``image_size`` L/ab squares. ``crops_from="rgb"`` (needs the ``rgb`` group too):
    training draws random squares of random size from the stored full-resolution photo
    (:func:`rgb_crop_to_lab`), except for a ``whole_image_fraction`` share of the examples,
    which are the record's whole padded image resized to ``crop_size``; evaluation always
    takes the whole image, as inference sees it. The embedding is the whole image's in every
    case (the records store one per photo). ``labels=True`` adds the records' class label
    (``build_records --labels_from=dirname``) as ``x["label"]``, int32 (B,).
    """
    if crops_from not in CROPS_FROM:
        raise ValueError(f"crops_from must be one of {CROPS_FROM}, got {crops_from!r}")
    if crops_from == "rgb" and not crop_size:
        raise ValueError("crops_from='rgb' needs a crop_size (the network's square)")
    groups = ("color", "rgb") if crops_from == "rgb" and training else ("color",)
    groups += ("label",) if labels else ()
    ds, recs = _read(source, split, groups=groups, training=training,
                     shuffle_buffer=shuffle_buffer, seed=seed, verify=verify)
    dim = recs.embedding_dim
    size = crop_size or (recs.manifest or {}).get("image_size")  # static shape when known

    def from_rgb(parsed):
        ex = decode_color_example(parsed, embedding_dim=dim)
        if not training:
            l, ab = _whole_image(ex, crop_size)
        else:
            whole = tf.random.uniform([], seed=_op_seed(seed, 43)) < whole_image_fraction
            l, ab = tf.cond(
                whole,
                lambda: _whole_image(augment_color(ex, crop_size=None, training=True,
                                                   seed=seed), crop_size),
                lambda: rgb_crop_to_lab(decode_rgb_example(parsed), crop_size=crop_size,
                                        min_fraction=min_crop_fraction, seed=seed))
        return {"l": l, "ab": ab, "embedding": ex["embedding"]}

    def to_example(parsed):
        if crops_from == "rgb":
            ex = from_rgb(parsed)
        else:
            ex = augment_color(decode_color_example(parsed, embedding_dim=dim),
                               crop_size=crop_size, training=training, seed=seed)
        l = tf.ensure_shape(ex["l"], [size, size, 1])
        ab = tf.ensure_shape(ex["ab"], [size, size, 2])
        x = {"l": l, "embedding": ex["embedding"]}
        if labels:
            x["label"] = tf.cast(parsed[features.LABEL], tf.int32)
        return x, ab

    ds = ds.map(to_example, num_parallel_calls=AUTOTUNE, deterministic=not training)
    if recs.num_records is not None:
        # One example per record: the manifest's count is the cardinality. Keras then knows
        # the epoch length (no spurious "ran out of data" warning), and a shard holding fewer
        # records than the manifest says fails loudly instead of shortening the epoch.
        ds = ds.apply(tf.data.experimental.assert_cardinality(recs.num_records))
    return _finish(ds, batch_size, drop_remainder, repeat)


# --- RGB patches (codec) and super-resolution pairs -------------------------------------------


def decode_rgb_example(parsed: dict) -> tf.Tensor:
    """Parsed features -> float32 (H, W, 3) sRGB in [0, 1]."""
    return tf.cast(features.decode_rgb(parsed[features.RGB]), tf.float32) / 255.0


def ensure_min_side(image: tf.Tensor, size: int) -> tf.Tensor:
    """Upscales (bicubic, aspect kept) an image whose short side is below ``size``."""
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    short = tf.minimum(h, w)

    def grow():
        scale = tf.cast(size, tf.float32) / tf.cast(short, tf.float32)
        nh = tf.maximum(size, tf.cast(tf.math.ceil(tf.cast(h, tf.float32) * scale), tf.int32))
        nw = tf.maximum(size, tf.cast(tf.math.ceil(tf.cast(w, tf.float32) * scale), tf.int32))
        return tf.clip_by_value(tf.image.resize(image, [nh, nw], "bicubic"), 0.0, 1.0)

    return tf.cond(short < size, grow, lambda: image)


def random_patches(image: tf.Tensor, patch_size: int, count: int,
                   seed: int | None = None) -> tf.Tensor:
    """``count`` random (patch_size, patch_size, C) crops of one image -> (count, P, P, C)."""
    image = ensure_min_side(image, patch_size)
    channels = image.shape[-1] or 3
    return tf.stack([tf.image.random_crop(image, [patch_size, patch_size, channels],
                                          seed=_op_seed(seed, 10 + k)) for k in range(count)])


def grid_patches(image: tf.Tensor, patch_size: int, stride: int) -> tf.Tensor:
    """All (patch_size, patch_size, C) sub-images on a ``stride`` grid -> (N, P, P, C)
    (SRCNN's sub-image extraction: 33 px at stride 14)."""
    image = ensure_min_side(image, patch_size)
    channels = image.shape[-1] or 3
    p = tf.image.extract_patches(image[None], [1, patch_size, patch_size, 1],
                                 [1, stride, stride, 1], [1, 1, 1, 1], "VALID")
    return tf.reshape(p, [-1, patch_size, patch_size, channels])


def random_grid_patches(image: tf.Tensor, patch_size: int, stride: int, count: int,
                        seed: int | None = None) -> tf.Tensor:
    """``count`` sub-images drawn uniformly, with replacement, from the ``stride`` grid of
    :func:`grid_patches` -> (count, P, P, C).

    Training samples the paper's sub-image set this way instead of streaming every grid
    patch of one image after another: the paper shuffles all sub-images of all images
    before batching, and a streamed grid (thousands of patches per photo) fills a shuffle
    buffer with patches of the same few photos, so each batch would see 4 or so images.
    """
    image = ensure_min_side(image, patch_size)
    shape = tf.shape(image)
    rows = (shape[0] - patch_size) // stride + 1
    cols = (shape[1] - patch_size) // stride + 1
    top = tf.random.uniform([count], 0, rows, tf.int32, seed=_op_seed(seed, 30)) * stride
    left = tf.random.uniform([count], 0, cols, tf.int32, seed=_op_seed(seed, 31)) * stride
    span = tf.range(patch_size)
    strips = tf.gather(image, top[:, None] + span)  # (count, P, W, C)
    return tf.gather(strips, left[:, None] + span, axis=2, batch_dims=1)


def bicubic_downscale(hr: tf.Tensor, scale: int) -> tf.Tensor:
    """The SR degradation (SPEC §3), used by training and evaluation alike.

    (..., H, W, C) in [0, 1] with H and W multiples of ``scale`` -> (..., H/s, W/s, C):
    bicubic with anti-aliasing (as MATLAB ``imresize``), clipped to [0, 1].
    """
    shape = tf.shape(hr)
    size = [shape[-3] // scale, shape[-2] // scale]
    return tf.clip_by_value(tf.image.resize(hr, size, "bicubic", antialias=True), 0.0, 1.0)


def bicubic_upscale(lr: tf.Tensor, scale: int) -> tf.Tensor:
    """(..., h, w, C) -> (..., h*s, w*s, C), bicubic, clipped to [0, 1] (SRCNN's input)."""
    shape = tf.shape(lr)
    size = [shape[-3] * scale, shape[-2] * scale]
    return tf.clip_by_value(tf.image.resize(lr, size, "bicubic"), 0.0, 1.0)


def to_y(rgb: tf.Tensor) -> tf.Tensor:
    """sRGB in [0, 1] -> studio-range Y in [16/255, 235/255], (..., 1)."""
    return color.rgb_to_ycbcr(rgb)[..., :1] / 255.0


def _patch_dataset(ds, *, patch_size, training, patches_per_image, stride, seed=None):
    def patches(parsed):
        image = decode_rgb_example(parsed)
        if stride and training:
            out = random_grid_patches(image, patch_size, stride, patches_per_image, seed)
        elif stride:
            out = grid_patches(image, patch_size, stride)
        elif training:
            out = random_patches(image, patch_size, patches_per_image, seed)
        else:
            out = tf.image.resize_with_crop_or_pad(
                ensure_min_side(image, patch_size), patch_size, patch_size)[None]
        if training:
            out = tf.image.random_flip_left_right(out, seed=_op_seed(seed, 3))
        return tf.data.Dataset.from_tensor_slices(out)

    return ds.flat_map(patches) if not training else ds.interleave(
        patches, cycle_length=4, num_parallel_calls=AUTOTUNE, deterministic=False)


def _eval_cardinality(ds, recs, training, stride):
    """Evaluation without a grid takes one centre patch per image: the manifest's record
    count is then the cardinality (Keras knows the epoch length; a short shard fails)."""
    if training or stride or recs.num_records is None:
        return ds
    return ds.apply(tf.data.experimental.assert_cardinality(recs.num_records))


def rgb_dataset(source, *, split="train", patch_size=256, batch_size=8, training=True,
                patches_per_image=1, stride=None, shuffle_buffer=256, seed=None, verify=True,
                drop_remainder=False, repeat=False) -> tf.data.Dataset:
    """(B, P, P, 3) sRGB patches in [0, 1] (the invertible-grayscale codec, SPEC §2)."""
    ds, recs = _read(source, split, groups=("rgb",), training=training,
                     shuffle_buffer=shuffle_buffer, seed=seed, verify=verify)
    ds = _patch_dataset(ds, patch_size=patch_size, training=training,
                        patches_per_image=patches_per_image, stride=stride, seed=seed)
    ds = _eval_cardinality(ds, recs, training, stride)
    if training and shuffle_buffer > 1:
        ds = ds.shuffle(shuffle_buffer, seed=seed)
    return _finish(ds, batch_size, drop_remainder, repeat)


def sr_dataset(source, *, scale, split="train", patch_size=33, batch_size=16, training=True,
               channels="y", upsample=True, patches_per_image=16, stride=None,
               shuffle_buffer=1024, seed=None, verify=True, drop_remainder=False,
               repeat=False) -> tf.data.Dataset:
    """Super-resolution pairs ``(low_res, high_res)`` in [0, 1] (SPEC §3).

    ``high_res``: (B, P, P, C) patches, P = ``patch_size`` rounded down to a multiple of
    ``scale``; C = 1 (studio Y, ``channels="y"``) or 3 (``"rgb"``). ``low_res``: the bicubic,
    anti-aliased downscale; with ``upsample=True`` (SRCNN, the auto-encoder) it is brought back
    to P×P by bicubic upscaling, with ``upsample=False`` (FSRCNN) it stays (P/s)×(P/s).
    ``stride`` puts the sub-images on a grid (the SRCNN paper: 33 px, stride 14): evaluation
    takes every one of them, training draws ``patches_per_image`` of them per image visit
    (:func:`random_grid_patches`); without ``stride``, training takes ``patches_per_image``
    random crops per image visit.
    """
    if scale not in (2, 3, 4):
        raise ValueError(f"scale must be 2, 3 or 4, got {scale}")
    if channels not in SR_CHANNELS:
        raise ValueError(f"channels must be one of {SR_CHANNELS}, got {channels!r}")
    patch = (patch_size // scale) * scale
    if patch < scale:
        raise ValueError(f"patch_size {patch_size} is smaller than the scale {scale}")
    ds, recs = _read(source, split, groups=("rgb",), training=training,
                     shuffle_buffer=max(1, shuffle_buffer // max(1, patches_per_image)),
                     seed=seed, verify=verify)
    ds = _patch_dataset(ds, patch_size=patch, training=training,
                        patches_per_image=patches_per_image, stride=stride, seed=seed)
    ds = _eval_cardinality(ds, recs, training, stride)
    if training and shuffle_buffer > 1:
        ds = ds.shuffle(shuffle_buffer, seed=seed)

    def pair(hr):
        lr = bicubic_downscale(hr, scale)
        if upsample:
            lr = bicubic_upscale(lr, scale)
        if channels == "y":
            return to_y(lr), to_y(hr)
        return lr, hr

    ds = ds.map(pair, num_parallel_calls=AUTOTUNE, deterministic=not training)
    return _finish(ds, batch_size, drop_remainder, repeat)
