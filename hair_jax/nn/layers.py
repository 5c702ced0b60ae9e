"""Basic layers in NHWC: convolution, channel LayerNorm, pixel (un)shuffle.

The convolution keeps PyTorch's semantics (zero padding, groups, default
initialisation) so that released weights import with a layout transpose only.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

ConvImpl = Literal["fast", "fast_rows", "lax", "onnx"]
CONV_IMPLS = ("fast", "fast_rows", "lax", "onnx")


def check_images(x: jax.Array, min_size: int = 8) -> None:
    """Raises a clear ValueError unless x is [B, H, W, 3], H and W multiples of 8."""
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected images [B, H, W, 3], got shape {tuple(x.shape)}")
    h, w = x.shape[1:3]
    if h % 8 or w % 8 or h < min_size or w < min_size:
        raise ValueError(
            f"image height and width must be multiples of 8 and at least {min_size}, "
            f"got {h}x{w} (pad or crop first)"
        )


def torch_uniform_init(fan_in: int):
    """PyTorch's default conv/linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _shifted_fma(xp: jax.Array, kernel: jax.Array, h: int, w: int) -> jax.Array:
    """sum_ij xp[:, i:i+h, j:j+w] * kernel[i, j] over a zero-padded xp."""
    out = xp[:, :h, :w] * kernel[0, 0]
    for i in range(3):
        for j in range(3):
            if i or j:
                out = out + xp[:, i : i + h, j : j + w] * kernel[i, j]
    return out


def _row_block(h: int, row_bytes: int, target_bytes: int = 1 << 20) -> int:
    """The largest divisor of h whose rows fit in about `target_bytes` (>= 1)."""
    rows = max(1, min(h, target_bytes // max(row_bytes, 1)))
    while h % rows:
        rows -= 1
    return rows


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _depthwise3x3(x: jax.Array, kernel: jax.Array, row_loop: bool) -> jax.Array:
    _, h, w, _ = x.shape
    return _shifted_fma(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))), kernel, h, w)


def _depthwise3x3_fwd(x, kernel, row_loop):
    return _depthwise3x3(x, kernel, row_loop), (x, kernel)


def _depthwise3x3_bwd(row_loop, res, g):
    x, kernel = res
    b, h, w, c = x.shape
    # dx is the same stencil with the kernel flipped, over the padded gradient.
    dx = _shifted_fma(jnp.pad(g, ((0, 0), (1, 1), (1, 1), (0, 0))), kernel[::-1, ::-1], h, w)
    # dk[i, j] = sum over b, y, x of xp[b, y+i, x+j] * g[b, y, x]. Written as
    # nine whole-image reductions, XLA:CPU materialises nine image-sized
    # products; accumulated over blocks of rows (`row_loop`), each block stays
    # in cache. On GPU/TPU the whole-image form is one fused reduction, where
    # a serial loop of small kernels would only add launches.
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    acc_dtype = jnp.promote_types(x.dtype, jnp.float32)
    rows = _row_block(h, b * w * c * x.dtype.itemsize) if row_loop else h

    def body(r, acc):
        y0 = r * rows
        xb = jax.lax.dynamic_slice_in_dim(xp, y0, rows + 2, axis=1)
        gb = jax.lax.dynamic_slice_in_dim(g, y0, rows, axis=1).astype(acc_dtype)
        sums = [
            jnp.sum(xb[:, i : i + rows, j : j + w].astype(acc_dtype) * gb, axis=(0, 1, 2))
            for i in range(3)
            for j in range(3)
        ]
        return acc + jnp.stack(sums).reshape(3, 3, c)

    zeros = jnp.zeros((3, 3, c), acc_dtype)
    dk = body(0, zeros) if rows == h else jax.lax.fori_loop(0, h // rows, body, zeros)
    return dx, dk.reshape(kernel.shape).astype(kernel.dtype)


_depthwise3x3.defvjp(_depthwise3x3_fwd, _depthwise3x3_bwd)


@jax.custom_vjp
def _pointwise(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jnp.einsum("bhwc,co->bhwo", x, kernel)


def _pointwise_fwd(x, kernel):
    return _pointwise(x, kernel), (x, kernel)


def _pointwise_bwd(res, g):
    x, kernel = res
    x2, g2 = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])  # [pixels, c], [pixels, o]
    dx = jnp.einsum("bhwo,co->bhwc", g, kernel)
    # Contract over pixels with both operands in their row-major [pixels, ch]
    # layout. Left to autodiff, XLA:CPU transposed the (wider) output
    # gradient instead, fused with whatever produced it (3x slower).
    dk = jax.lax.dot_general(x2, g2, (((0,), (0,)), ((), ())))
    return dx, dk.astype(kernel.dtype)


_pointwise.defvjp(_pointwise_fwd, _pointwise_bwd)


def pointwise_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """1x1 convolution of x [B, H, W, C] with kernel [C, O] as a channel matmul."""
    return _pointwise(x, kernel.astype(x.dtype))


def depthwise_conv3x3(x: jax.Array, kernel: jax.Array, *, row_loop: bool = False) -> jax.Array:
    """Depthwise 3x3 convolution, stride 1, zero padding 1, as 9 shifted FMAs.

    The same sums as `lax.conv_general_dilated` with feature_group_count=C,
    which XLA:CPU runs far slower, forward and backward. The backward is
    written out. Under `jax.vmap` (per-image kernels) it batches like any
    other function.

    Args:
      x: [B, H, W, C].
      kernel: [3, 3, 1, C] (HWIO with one input channel per group).
      row_loop: accumulate the kernel gradient over cache-sized blocks of
        rows in a `fori_loop` (the XLA:CPU form) instead of one whole-image
        reduction (the GPU/TPU form). Same values up to float rounding.
    """
    return _depthwise3x3(x, kernel.astype(x.dtype), row_loop)


_SQRT_HALF = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327


@jax.custom_vjp
def gelu_gate(x1: jax.Array, x2: jax.Array) -> jax.Array:
    """gelu(x1) * x2 with the exact (erf) GELU, PyTorch's F.gelu default.

    Its backward evaluates erf and exp once per element from the saved
    inputs; autodiff of `jax.nn.gelu` went through erfc twice and kept
    more intermediates (it was a quarter of the GDFN's backward time).
    """
    x1f = x1.astype(jnp.float32)
    cdf = 0.5 * (1.0 + jax.lax.erf(x1f * _SQRT_HALF))
    return (x1f * cdf).astype(x1.dtype) * x2


def _gelu_gate_fwd(x1, x2):
    return gelu_gate(x1, x2), (x1, x2)


def _gelu_gate_bwd(res, g):
    x1, x2 = res
    x1f, x2f, gf = x1.astype(jnp.float32), x2.astype(jnp.float32), g.astype(jnp.float32)
    cdf = 0.5 * (1.0 + jax.lax.erf(x1f * _SQRT_HALF))
    pdf = _INV_SQRT_2PI * jnp.exp(-0.5 * x1f * x1f)
    d1 = gf * x2f * (cdf + x1f * pdf)
    d2 = gf * x1f * cdf
    return d1.astype(x1.dtype), d2.astype(x2.dtype)


gelu_gate.defvjp(_gelu_gate_fwd, _gelu_gate_bwd)


class Conv2d(nnx.Module):
    """2-D convolution on NHWC inputs with an HWIO kernel.

    `impl="fast"` takes an exact fast path where one exists: a 1x1 convolution
    is a channel matmul, a depthwise 3x3 convolution is 9 shifted
    multiply-adds. `impl="fast_rows"` is the same with the depthwise kernel
    gradient accumulated over blocks of rows (faster on XLA:CPU, see
    `depthwise_conv3x3`). `impl="lax"` always uses `lax.conv_general_dilated`.
    `impl="onnx"` is the ONNX export's form: 1x1 convolutions as matmuls,
    every other one (depthwise included) as `lax.conv_general_dilated`,
    which jax2onnx writes as one ONNX `Conv` node where the shifted
    multiply-adds would become 27 nodes on full-size maps.
    All give the same result up to float rounding.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int = 1,
        *,
        stride: int = 1,
        padding: int | tuple | str | None = None,
        groups: int = 1,
        use_bias: bool = False,
        impl: ConvImpl = "fast",
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if impl not in CONV_IMPLS:
            raise ValueError(f"conv impl must be one of {CONV_IMPLS}, got {impl!r}")
        if in_features % groups or out_features % groups:
            raise ValueError(
                f"channels {in_features}->{out_features} not divisible by groups={groups}"
            )
        self.in_features, self.out_features = in_features, out_features
        self.kernel_size, self.stride, self.groups = kernel_size, stride, groups
        # PyTorch's `padding=k // 2` for odd kernels.
        p = kernel_size // 2 if padding is None else padding
        self.padding = ((p, p), (p, p)) if isinstance(p, int) else p
        self.impl, self.dtype = impl, dtype
        fan_in = in_features // groups * kernel_size * kernel_size
        init = torch_uniform_init(fan_in)
        shape = (kernel_size, kernel_size, in_features // groups, out_features)
        self.kernel = nnx.Param(init(rngs.params(), shape, param_dtype))
        self.bias = (
            nnx.Param(init(rngs.params(), (out_features,), param_dtype)) if use_bias else None
        )

    @property
    def channel_major(self) -> bool:
        """Whether this is in the ONNX export's form, where the modules around it run NCHW."""
        return self.impl == "onnx"

    def _require_pointwise(self, caller: str) -> None:
        """A one-line error naming `caller` unless this is a 1x1 convolution."""
        if self._fast_path() != "matmul":
            raise ValueError(f"{caller} needs a 1x1 convolution, got {self.kernel.shape}")

    def _fast_path(self) -> str | None:
        if self.impl == "lax" or self.stride != 1:
            return None
        if self.kernel_size == 1 and self.groups == 1:
            return "matmul"
        if self.impl == "onnx":
            return None
        depthwise = self.groups == self.in_features == self.out_features
        if self.kernel_size == 3 and depthwise and self.padding == ((1, 1), (1, 1)):
            return "depthwise"
        return None

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = self.dtype or x.dtype
        x, kernel = x.astype(dtype), self.kernel[...].astype(dtype)
        path = self._fast_path()
        if path == "matmul" and self.impl == "onnx":
            # jax2onnx writes jnp.matmul as an ONNX MatMul, and the einsum of
            # `pointwise_conv` as onnxruntime's far slower Einsum.
            y = jnp.matmul(x, kernel[0, 0])
        elif path == "matmul":
            y = pointwise_conv(x, kernel[0, 0])
        elif path == "depthwise":
            y = depthwise_conv3x3(x, kernel, row_loop=self.impl == "fast_rows")
        else:
            y = self._lax_conv(x, kernel, "NHWC", self.groups)
        if self.bias is not None:
            y = y + self.bias[...].astype(dtype)
        return y

    def _lax_conv(self, x, kernel, layout: str, groups: int) -> jax.Array:
        return jax.lax.conv_general_dilated(
            x,
            kernel,
            (self.stride, self.stride),
            self.padding,
            dimension_numbers=(layout, "HWIO", layout),
            feature_group_count=groups,
        )

    def _chunk(self, dtype, part: tuple[int, int]):
        """Kernel and bias of output chunk i of n (of a depthwise conv: its inputs' too)."""
        i, n = part
        depthwise = self.groups == self.in_features == self.out_features
        pointwise = self.groups == 1 and self.kernel_size == 1
        if n > 1 and (self.out_features % n or not (depthwise or pointwise)):
            raise ValueError(
                f"only 1x1 and depthwise convs split in {n}, got kernel {self.kernel.shape}"
            )
        k = self.out_features // n
        kernel = self.kernel[...].astype(dtype)[..., i * k : (i + 1) * k]
        bias = None if self.bias is None else self.bias[...].astype(dtype)[i * k : (i + 1) * k]
        return kernel, bias

    def to_channels_first(self, x: jax.Array, chunks: int = 1) -> list[jax.Array]:
        """This 1x1 convolution of an NHWC map, returned NCHW in `chunks` parts along channels.

        Each part is kernel_part^T @ x^T per image: onnxruntime folds the
        transpose of x into its matmul, so the wider output needs no
        transpose, and no Split copies it apart.
        """
        self._require_pointwise("to_channels_first")
        b, h, w, c = x.shape
        dtype = self.dtype or x.dtype
        xt = x.astype(dtype).reshape(b, h * w, c).transpose(0, 2, 1)
        outs = []
        for i in range(chunks):
            kernel, bias = self._chunk(dtype, (i, chunks))
            y = jnp.matmul(kernel[0, 0].T, xt)
            y = y if bias is None else y + bias[:, None]
            outs.append(y.reshape(b, -1, h, w))
        return outs

    def from_channels_first(self, x: jax.Array) -> jax.Array:
        """This 1x1 convolution of an NCHW map [B, C, H, W], returned NHWC.

        x^T @ kernel per image: onnxruntime folds the transpose of x into its
        matmul, so neither map is transposed on its own.
        """
        self._require_pointwise("from_channels_first")
        b, c, h, w = x.shape
        dtype = self.dtype or x.dtype
        xt = x.astype(dtype).reshape(b, c, h * w).transpose(0, 2, 1)
        y = jnp.matmul(xt, self.kernel[0, 0].astype(dtype)).reshape(b, h, w, -1)
        return y if self.bias is None else y + self.bias[...].astype(dtype)

    def channels_first(self, x: jax.Array, part: tuple[int, int] = (0, 1)) -> jax.Array:
        """The same convolution of an NCHW map [B, C, H, W] (ONNX's layout: no transposes).

        A 1x1 convolution is kernel^T @ x per image (an ONNX MatMul).
        `part=(i, n)`: only output chunk i of n (a depthwise conv reads chunk i).
        """
        dtype = self.dtype or x.dtype
        x = x.astype(dtype)
        kernel, bias = self._chunk(dtype, part)
        if self._fast_path() == "matmul":
            b, c, h, w = x.shape
            y = jnp.matmul(kernel[0, 0].T, x.reshape(b, c, h * w)).reshape(b, -1, h, w)
        else:
            y = self._lax_conv(x, kernel, "NCHW", self.groups // part[1])
        return y if bias is None else y + bias[:, None, None]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _layer_norm(x, scale, bias, centre: bool, eps: float):
    """Restormer's channel LayerNorm on float32 x [..., C]; bias may be None."""
    mu = jnp.mean(x, axis=-1, keepdims=True)
    xc = x - mu
    rstd = jax.lax.rsqrt(jnp.mean(xc * xc, axis=-1, keepdims=True) + eps)
    y = (xc if centre else x) * rstd * scale
    return y if bias is None else y + bias


def _layer_norm_fwd(x, scale, bias, centre, eps):
    return _layer_norm(x, scale, bias, centre, eps), (x, scale, bias)


def _layer_norm_bwd(centre, eps, res, g):
    # One pass of two channel means, instead of autodiff's chain through
    # mean, var and rsqrt (which XLA:CPU ran as several reductions).
    x, scale, bias = res
    mu = jnp.mean(x, axis=-1, keepdims=True)
    xc = x - mu
    rstd = jax.lax.rsqrt(jnp.mean(xc * xc, axis=-1, keepdims=True) + eps)
    xhat = xc * rstd
    gs = g * scale
    if centre:  # y = xhat * scale + bias
        dx = rstd * (
            gs - jnp.mean(gs, -1, keepdims=True) - xhat * jnp.mean(gs * xhat, -1, keepdims=True)
        )
        dscale = jnp.sum(g * xhat, axis=tuple(range(g.ndim - 1)))
    else:  # y = x * rstd * scale, rstd still from the centred variance
        dx = rstd * (gs - xhat * rstd * jnp.mean(gs * x, -1, keepdims=True))
        dscale = jnp.sum(g * x * rstd, axis=tuple(range(g.ndim - 1)))
    dbias = None if bias is None else jnp.sum(g, axis=tuple(range(g.ndim - 1)))
    return dx, dscale, dbias


_layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


class LayerNorm(nnx.Module):
    """Restormer's LayerNorm over channels (last axis), computed in float32.

    `with_bias=False` is Restormer's BiasFree variant, which scales x by
    1/std without centring it. Variance is biased, eps 1e-5, as in PyTorch.
    The backward pass is written out (see `_layer_norm_bwd`).
    """

    def __init__(
        self, dim: int, *, with_bias: bool = True, eps: float = 1e-5, param_dtype=jnp.float32
    ):
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((dim,), param_dtype)) if with_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        bias = None if self.bias is None else self.bias[...].astype(jnp.float32)
        centre = self.bias is not None
        y = _layer_norm(
            x.astype(jnp.float32), self.scale[...].astype(jnp.float32), bias, centre, self.eps
        )
        return y.astype(x.dtype)


def spatial_mean(x: jax.Array) -> jax.Array:
    """The mean of x [B, H, W, C] over H and W, [B, 1, 1, C]: over W, then over H.

    The same value as one mean over both axes. Exported, it is two one-axis
    ReduceMeans: onnxruntime reduced two middle axes of a full map at once
    far more slowly.
    """
    return jnp.mean(jnp.mean(x, axis=2, keepdims=True), axis=1, keepdims=True)


def pixel_unshuffle(x: jax.Array, r: int = 2) -> jax.Array:
    """PyTorch's PixelUnshuffle in NHWC: [B,H,W,C] -> [B,H/r,W/r,C*r*r].

    PyTorch orders output channels as (c, i, j) with (i, j) the offset inside
    each r x r cell; that order is what released weights expect.
    """
    b, h, w, c = x.shape
    x = x.reshape(b, h // r, r, w // r, r, c)  # b h i w j c
    x = x.transpose(0, 1, 3, 5, 2, 4)  # b h w c i j
    return x.reshape(b, h // r, w // r, c * r * r)


def pixel_shuffle(x: jax.Array, r: int = 2) -> jax.Array:
    """PyTorch's PixelShuffle in NHWC: [B,H,W,C*r*r] -> [B,H*r,W*r,C]."""
    b, h, w, crr = x.shape
    c = crr // (r * r)
    x = x.reshape(b, h, w, c, r, r)  # b h w c i j
    x = x.transpose(0, 1, 4, 2, 5, 3)  # b h i w j c
    return x.reshape(b, h * r, w * r, c)
