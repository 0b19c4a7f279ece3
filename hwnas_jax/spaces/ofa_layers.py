"""Layers of the OFA networks: activations, He fan-out init, depthwise convolution, masked BN.

Used by :mod:`hwnas_jax.spaces.ofa_net`; see its docstring for the architecture.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from hwnas_jax.spaces.ofa_layout import BN_EPS, BN_MOMENTUM, KERNEL_CHOICES

_MAX_K = max(KERNEL_CHOICES)


def h_swish(x: jax.Array) -> jax.Array:
    """``x * relu6(x + 3) / 6``."""
    return x * jax.nn.relu6(x + 3.0) / 6.0


def h_sigmoid(x: jax.Array) -> jax.Array:
    """``relu6(x + 3) / 6``."""
    return jax.nn.relu6(x + 3.0) / 6.0


_ACTS: dict[str, Callable[[jax.Array], jax.Array]] = {'relu': jax.nn.relu, 'h_swish': h_swish}


def _he_fout(fan_out: Any) -> Callable[..., jax.Array]:
    """OFA's ``he_fout`` init, N(0, 2 / fan_out); ``fan_out`` may be traced (active width)."""

    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.normal(key, shape, dtype) * jnp.sqrt(2.0 / fan_out).astype(dtype)

    return init


def _conv(
    features: int,
    kernel: int,
    fan_out: Any,
    *,
    stride: int = 1,
    groups: int = 1,
    bias: bool = False,
    mask: jax.Array | None = None,
    name: str,
) -> nn.Conv:
    pad = kernel // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=stride,
        padding=((pad, pad), (pad, pad)),
        feature_group_count=groups,
        use_bias=bias,
        mask=mask,
        kernel_init=_he_fout(fan_out),
        name=name,
    )


def depthwise_conv(
    x: jax.Array, kernel: jax.Array, stride: int = 1, *, impl: str | None = None
) -> jax.Array:
    """Depthwise ``k x k`` convolution of ``x: [N, H, W, C]``, padding ``k // 2`` on every side.

    ``kernel: [k, k, 1, C]`` (flax ``nn.Conv`` layout with ``feature_group_count=C``); output
    ``[N, (H + 2p - k) // stride + 1, ..., C]`` as PyTorch's ``Conv2d(padding=k // 2)``.

    ``impl``: ``'shifted'`` sums the ``k * k`` shifted, strided slices of the padded input times
    the per-channel taps; ``'grouped'`` is XLA's grouped convolution. ``None`` picks ``'shifted'``
    on CPU, where XLA's grouped convolution is several times slower (forward and backward), and
    ``'grouped'`` elsewhere.
    """
    if impl is None:
        impl = 'shifted' if jax.default_backend() == 'cpu' else 'grouped'
    kh, kw, one, c = kernel.shape
    if one != 1 or c != x.shape[-1]:
        raise ValueError(f'Depthwise kernel {kernel.shape} does not fit input {x.shape}.')
    ph, pw = kh // 2, kw // 2
    if impl == 'grouped':
        return jax.lax.conv_general_dilated(
            x,
            kernel,
            (stride, stride),
            ((ph, ph), (pw, pw)),
            dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
            feature_group_count=c,
        )
    if impl != 'shifted':
        raise ValueError(f"impl must be 'shifted', 'grouped' or None, got {impl!r}.")
    h_out = (x.shape[1] + 2 * ph - kh) // stride + 1
    w_out = (x.shape[2] + 2 * pw - kw) // stride + 1
    xp = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    out = None
    for dy in range(kh):
        for dx in range(kw):
            t = (
                jax.lax.slice(
                    xp,
                    (0, dy, dx, 0),
                    (xp.shape[0], dy + stride * (h_out - 1) + 1, dx + stride * (w_out - 1) + 1, c),
                    (1, stride, stride, 1),
                )
                * kernel[dy, dx, 0]
            )
            out = t if out is None else out + t
    return out


class DepthwiseConv(nn.Module):
    """Depthwise conv with ``nn.Conv``'s parameters (``kernel: [k, k, 1, C]``, no bias).

    Attributes:
      kernel_size: k (padding ``k // 2`` on every side).
      fan_out: fan-out of the He (fan-out) init; may be traced.
      stride: spatial stride.
      mask: optional multiplier of the kernel (``nn.Conv``'s ``mask``).
      impl: see ``depthwise_conv``.
    """

    kernel_size: int
    fan_out: Any
    stride: int = 1
    mask: jax.Array | None = None
    impl: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        kernel = self.param(
            'kernel',
            _he_fout(self.fan_out),
            (self.kernel_size, self.kernel_size, 1, c),
            jnp.float32,
        )
        if self.mask is not None:
            kernel = kernel * self.mask
        x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=None)
        return depthwise_conv(x, kernel, self.stride, impl=self.impl)


def _bn(train: bool, name: str) -> nn.BatchNorm:
    return nn.BatchNorm(
        use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPS, name=name
    )


class MaskedBatchNorm(nn.Module):
    """BatchNorm over [N, H, W, C] whose running statistics update only where ``update`` is true.

    Same variables and arithmetic as ``nn.BatchNorm`` (params ``scale``, ``bias``; batch_stats
    ``mean``, ``var``), so its variables are interchangeable with those of ``nn.BatchNorm``.
    """

    @nn.compact
    def __call__(self, x: jax.Array, update: jax.Array, *, train: bool) -> jax.Array:
        """Normalises ``x: [N, H, W, C]``; ``update: [C]`` bool (or scalar) gates the update."""
        c = x.shape[-1]
        scale = self.param('scale', nn.initializers.ones, (c,))
        bias = self.param('bias', nn.initializers.zeros, (c,))
        ra_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable('batch_stats', 'var', lambda: jnp.ones((c,), jnp.float32))
        if train:
            mean = jnp.mean(x, axis=(0, 1, 2))
            var = jnp.maximum(0.0, jnp.mean(jnp.square(x), axis=(0, 1, 2)) - jnp.square(mean))
            if not self.is_initializing():
                m = BN_MOMENTUM
                ra_mean.value = jnp.where(update, m * ra_mean.value + (1 - m) * mean, ra_mean.value)
                ra_var.value = jnp.where(update, m * ra_var.value + (1 - m) * var, ra_var.value)
        else:
            mean, var = ra_mean.value, ra_var.value
        return (x - mean) * (jax.lax.rsqrt(var + BN_EPS) * scale) + bias
