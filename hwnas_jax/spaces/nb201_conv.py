"""The convolutions of NAS-Bench-201's networks: one Flax layer, three implementations.

'xla' is ``lax.conv_general_dilated`` with JAX's autodiff; 'im2col' builds patches and does one
matrix product; 'xla_cpu' is XLA's convolution with both gradients written as forward
convolutions (XLA:CPU runs autodiff's transposed convolutions as slow loops inside a scan) and
1x1 convolutions as matrix products. The same parameters and, up to rounding, the same result;
measured speeds in benchmarks/README.md.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

CONV_IMPLS = ('xla', 'im2col', 'xla_cpu')
_KERNEL_INIT = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')


def _im2col_conv(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    """Convolution as patch extraction (strided slices) and one matrix product.

    Args:
      x: [B, H, W, C_in].
      kernel: [k, k, C_in, C_out].

    Returns:
      [B, H_out, W_out, C_out], H_out = (H + 2 padding - k) // stride + 1.
    """
    k, _, c_in, c_out = kernel.shape
    if padding:
        x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    h_out = (x.shape[1] - k) // stride + 1
    w_out = (x.shape[2] - k) // stride + 1
    patches = [
        x[
            :,
            dy : dy + stride * (h_out - 1) + 1 : stride,
            dx : dx + stride * (w_out - 1) + 1 : stride,
            :,
        ]
        for dy in range(k)
        for dx in range(k)
    ]
    # Channel order (dy, dx, c_in) matches the kernel's row-major reshape.
    cols = patches[0] if k == 1 else jnp.concatenate(patches, axis=-1)
    return cols @ kernel.reshape(k * k * c_in, c_out)


_DIMENSION_NUMBERS = ('NHWC', 'HWIO', 'NHWC')


def _xla_conv(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    return lax.conv_general_dilated(
        x, kernel, (stride, stride), ((padding, padding),) * 2, dimension_numbers=_DIMENSION_NUMBERS
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _cpu_conv(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    """XLA's convolution, with both gradients written as NHWC/HWIO forward convolutions.

    Autodiff writes the kernel gradient as a convolution with dimension labels
    ``f01b_i01o->01bf`` and the input gradient with a kernel in ``01oi`` order. XLA:CPU
    (jaxlib 0.10) brings such convolutions to the one form its Eigen kernels take, except inside
    a while loop (the training `scan`), where it runs them as naive loops instead: measured
    530 ms against 9 ms for one kernel gradient at [32, 32, 32, 16], 3x3, and 28.7 s against
    0.67 s per training step of the full network. Here the kernel gradient is the same sum as
    the convolution of x^T [C_in, H, W, B] with dy^T [H', W', B, C_out] (dilated by the
    stride), and the input gradient the convolution of dy (dilated by the stride) with the
    flipped kernel [k, k, C_out, C_in]: both in the canonical form, wherever they run.

    Args:
      x: [B, H, W, C_in].
      kernel: [k, k, C_in, C_out].
      stride, padding: as in :class:`Conv2d`.

    Returns:
      [B, H_out, W_out, C_out].
    """
    return _xla_conv(x, kernel, stride, padding)


def _cpu_conv_fwd(x, kernel, stride, padding):
    return _xla_conv(x, kernel, stride, padding), (x, kernel)


def _cpu_conv_bwd(stride, padding, residuals, dy):
    x, kernel = residuals
    k = kernel.shape[0]
    # dx: dy dilated by the stride, convolved with the flipped kernel, C_in and C_out swapped.
    flipped = jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2))
    pads = [
        (k - 1 - padding, x.shape[d] + k - 2 - (dy.shape[d] - 1) * stride - (k - 1 - padding))
        for d in (1, 2)
    ]
    dx = lax.conv_general_dilated(
        dy,
        flipped,
        (1, 1),
        pads,
        lhs_dilation=(stride, stride),
        dimension_numbers=_DIMENSION_NUMBERS,
    )
    # dw[i, j, c, o] = sum_{b, y, x} x_pad[b, s y + i, s x + j, c] dy[b, y, x, o]: a stride-1
    # convolution of x^T by dy^T dilated by s, high padding chosen to give k outputs.
    high = [k + (dy.shape[d] - 1) * stride - x.shape[d] - padding for d in (1, 2)]
    dw = lax.conv_general_dilated(
        jnp.transpose(x, (3, 1, 2, 0)),
        jnp.transpose(dy, (1, 2, 0, 3)),
        (1, 1),
        [(padding, high[0]), (padding, high[1])],
        rhs_dilation=(stride, stride),
        dimension_numbers=_DIMENSION_NUMBERS,
    )
    return dx, jnp.transpose(dw, (1, 2, 0, 3))


_cpu_conv.defvjp(_cpu_conv_fwd, _cpu_conv_bwd)


class Conv2d(nn.Module):
    """Bias-free 2-D convolution with PyTorch's symmetric padding, in three implementations.

    Attributes:
      features: C_out.
      kernel_size: k (square kernel [k, k, C_in, C_out]).
      strides: stride in both dimensions.
      padding: zeros added on each side (PyTorch ``padding``).
      impl: 'xla' (``lax.conv_general_dilated`` and its autodiff), 'im2col' (patches and a
        matrix product) or 'xla_cpu' (XLA's convolution with gradients XLA:CPU runs fast inside
        loops, see :func:`_cpu_conv`; 1x1 convolutions as matrix products); the same
        parameters and, up to rounding, the same result.
    """

    features: int
    kernel_size: int
    strides: int = 1
    padding: int = 0
    impl: str = 'xla'

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """[B, H, W, C_in] -> [B, H_out, W_out, features]."""
        if self.impl not in CONV_IMPLS:
            raise ValueError(f'conv_impl must be one of {CONV_IMPLS}, got {self.impl!r}')
        k = self.kernel_size
        kernel = self.param('kernel', _KERNEL_INIT, (k, k, x.shape[-1], self.features))
        return _conv(x, kernel, self.strides, self.padding, self.impl)


def _conv(x: jax.Array, kernel: jax.Array, stride: int, padding: int, impl: str) -> jax.Array:
    """The convolution of :class:`Conv2d`: x [B, H, W, C_in], kernel [k, k, C_in, C_out]."""
    if impl == 'im2col':
        return _im2col_conv(x, kernel, stride, padding)
    if impl == 'xla_cpu':
        if kernel.shape[0] == 1 and stride == 1 and not padding:
            return x @ kernel.reshape(kernel.shape[2:])  # All three products are matmuls.
        return _cpu_conv(x, kernel, stride, padding)
    return _xla_conv(x, kernel, stride, padding)
