"""The invertible-grayscale codec's encoder and decoder networks (SPEC §2); the layer tables
and the departures are in :mod:`koala.tasks.codec.model`'s docstring."""

from __future__ import annotations

import keras

DOWNSAMPLING = 4  # two stride-2 convs in the encoder
INIT_STDDEV = 0.02  # N(0, 0.02) kernels, as the authors' code
LUMA_KERNEL = [[[[0.299], [0.587], [0.114]]]]  # (1, 1, 3, 1): BT.601 luma

__all__ = ["DOWNSAMPLING", "INIT_STDDEV", "decoder", "encoder"]



def _conv(filters: int, kernel: int, name: str, strides: int = 1, activation=None,
          dtype=None):
    return keras.layers.Conv2D(
        filters, kernel, strides=strides, padding="same", activation=activation,
        use_bias=False, kernel_initializer=keras.initializers.RandomNormal(0.0, INIT_STDDEV),
        dtype=dtype, name=name,
    )


def _residual(x, filters: int, name: str):
    """conv3 + ReLU -> conv3, plus the identity: (B, h, w, filters) -> same shape."""
    y = _conv(filters, 3, f"{name}_conv1", activation="relu")(x)
    y = _conv(filters, 3, f"{name}_conv2")(y)
    return keras.layers.Add(name=f"{name}_add")([x, y])


def _to_signed(name):
    return keras.layers.Rescaling(2.0, offset=-1.0, name=name)


def _to_unit(name):
    # float32, so the model's output is float32 under mixed precision too.
    return keras.layers.Rescaling(0.5, offset=0.5, dtype="float32", name=name)


def _clip_signed(x, name: str):
    """clip(x, -1, 1) from plain layers (ReLU with a ceiling), float32."""
    x = keras.layers.Rescaling(1.0, offset=1.0, dtype="float32", name=f"{name}_shift")(x)
    x = keras.layers.ReLU(max_value=2.0, dtype="float32", name=f"{name}_clip")(x)
    return keras.layers.Rescaling(1.0, offset=-1.0, dtype="float32", name=name)(x)


def _end(x, base, name: str):
    """The last step on [-1, 1]: tanh (the paper), or clip(base + x) for residual ends."""
    if base is None:
        return keras.layers.Activation("tanh", dtype="float32", name="tanh")(x)
    return _clip_signed(keras.layers.Add(dtype="float32", name=name)([base, x]), "clip")


def _luma(x, name: str):
    """BT.601 luma of a (B, H, W, 3) tensor, a frozen 1x1 convolution (float32)."""
    conv = keras.layers.Conv2D(1, 1, use_bias=False, trainable=False, dtype="float32",
                               name=name,
                               kernel_initializer=keras.initializers.Constant(LUMA_KERNEL))
    return conv(x)


def _check_positive(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def encoder(filters: int = 64, res_blocks=(2, 4, 2), name: str = "encoder", *,
            residual: bool = False) -> keras.Model:
    """The encoder E: sRGB (B, H, W, 3) in [0, 1] -> gray (B, H, W, 1) in [0, 1], float32.

    ``filters`` f sets the widths f, 2f, 4f (64 in the paper); ``res_blocks`` the residual
    blocks before the first skip, at the bottom, and after the last skip ((2, 4, 2)). H and
    W must be multiples of 4. See the module docstring for the layer table.

    ``residual`` (a departure, :mod:`koala.tasks.codec.model`'s 10): G' = clip(Y(I') + z,
    -1, 1) with z the last convolution's output (no tanh), so the encoder starts at the luma
    and learns only what it adds to hide the colour.
    """
    _check_positive("filters", filters)
    res_blocks = tuple(res_blocks)
    if len(res_blocks) != 3:
        raise ValueError(f"res_blocks needs 3 counts (top, bottom, end), got {res_blocks}")
    for n in res_blocks:
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"res_blocks must be non-negative integers, got {res_blocks}")
    f1, f2, f4 = filters, 2 * filters, 4 * filters

    rgb = keras.Input((None, None, 3), name="rgb")
    x = signed = _to_signed("to_signed")(rgb)
    x = _conv(f1, 3, "conv_in")(x)
    for i in range(res_blocks[0]):
        x = _residual(x, f1, f"res1_{i + 1}")
    s1 = x  # (B, H, W, f)
    x = _conv(f2, 3, "down1_a", strides=2)(x)
    s2 = x = _conv(f2, 3, "down1_b", activation="relu")(x)  # (B, H/2, W/2, 2f)
    x = _conv(f4, 3, "down2_a", strides=2)(x)
    x = _conv(f4, 3, "down2_b", activation="relu")(x)  # (B, H/4, W/4, 4f)
    for i in range(res_blocks[1]):
        x = _residual(x, f4, f"res2_{i + 1}")
    x = keras.layers.UpSampling2D(2, interpolation="nearest", name="up1")(x)
    x = _conv(f2, 3, "up1_a")(x)
    x = _conv(f2, 3, "up1_b", activation="relu")(x)
    x = keras.layers.Add(name="skip2")([x, s2])  # (B, H/2, W/2, 2f)
    x = keras.layers.UpSampling2D(2, interpolation="nearest", name="up2")(x)
    x = _conv(f1, 3, "up2_a")(x)
    x = _conv(f1, 3, "up2_b", activation="relu")(x)
    x = keras.layers.Add(name="skip1")([x, s1])  # (B, H, W, f)
    for i in range(res_blocks[2]):
        x = _residual(x, f1, f"res3_{i + 1}")
    # float32 under mixed precision too: bfloat16 would hold G to ~0.5 grey levels near
    # white, coarser than the 8-bit grid that L_Q aims at.
    x = _conv(1, 3, "conv_out", dtype="float32")(x)
    x = _end(x, _luma(signed, "luma") if residual else None, "plus_luma")
    gray = _to_unit("gray")(x)
    return keras.Model(rgb, gray, name=name)


def decoder(filters: int = 64, res_blocks: int = 8, name: str = "decoder", *,
            residual: bool = False) -> keras.Model:
    """The decoder D: gray (B, H, W, 1) in [0, 1] -> sRGB (B, H, W, 3) in [0, 1], float32.

    conv3/f -> ``res_blocks`` residual blocks(f) -> conv3/4f (linear) -> conv1/3 -> tanh.
    ``residual`` (departure 10): R' = clip(G' + z, -1, 1) on each channel, z the conv1/3's
    output (no tanh): the decoder learns the colour around the gray it is given.
    """
    _check_positive("filters", filters)
    if not isinstance(res_blocks, int) or res_blocks < 0:
        raise ValueError(f"res_blocks must be a non-negative integer, got {res_blocks!r}")
    gray = keras.Input((None, None, 1), name="gray")
    x = signed = _to_signed("to_signed")(gray)
    x = _conv(filters, 3, "conv_in")(x)
    for i in range(res_blocks):
        x = _residual(x, filters, f"res{i + 1}")
    x = _conv(4 * filters, 3, "conv_wide")(x)
    x = _conv(3, 1, "conv_out", dtype="float32")(x)
    base = (keras.layers.Concatenate(dtype="float32", name="gray3")([signed] * 3)
            if residual else None)
    x = _end(x, base, "plus_gray")
    rgb = _to_unit("rgb")(x)
    return keras.Model(gray, rgb, name=name)
