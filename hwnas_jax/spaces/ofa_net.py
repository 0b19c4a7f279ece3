"""Flax networks of the OFA MobileNetV3 space: an exact network per genome, and a masked one.

The architecture follows OFA's ``OFAMobileNetV3`` (Cai et al., ICLR 2020): a stride-2 3x3 stem
(BN, h-swish), a first depthwise block (expand 1, k3, ReLU), five elastic stages of up to four
MBConv blocks (expand 1x1 -> depthwise kxk -> [SE] -> project 1x1, each conv followed by BN), a
final 1x1 expand (BN, h-swish), global average pooling, a 1x1 feature mix (no BN, no bias,
h-swish) and a linear classifier. Convolutions pad by ``k // 2`` on every side, as PyTorch does.

``Network`` is built for one static genome and holds exactly the parameters of that subnet.
``PopulationNetwork`` takes the genome as a traced ``int32[45]`` array and computes the same
function with the largest shapes and masks, so one compiled program serves every genome and can
be ``jax.vmap``-ed over a population:

* kernel size: the k3/k5 depthwise kernel is the raw centre crop of the 7x7 kernel (the outer
  taps are masked to zero). OFA additionally passes the crop through a learned kernel
  transformation matrix; that is a training device of the weight-sharing supernet and is not
  part of this space's function, so it is omitted.
* expand ratio: the first ``mid`` channels of the expand, depthwise and SE layers are active; the
  others are zeroed after each activation, so they contribute nothing downstream. BatchNorm
  statistics are per channel, so the active channels' batch statistics are exact in train mode;
  a masked BatchNorm leaves the running statistics of inactive channels untouched.
* depth: a skipped block is the identity and does not update its running statistics.

Parameter paths are shared: ``exact_variables`` slices population variables (the kernel centres
and the first ``mid`` channels, dropping skipped blocks) into variables of ``Network``, with
``Network(g).apply(exact_variables(v, g), x, ...) == PopulationNetwork().apply(v, x, g, ...)``.
The population network also initialises each layer with the active fan-out (He, fan-out, as OFA
does), so a fresh population member is distributed as a fresh exact network.

Inputs of resolution 64 or less use the CIFAR stem (``cifar_stem=None`` decides automatically):
the stem and the first stage use stride 1, a total downsampling of 8 instead of 32, as CIFAR
variants of MobileNets do.

Genome layout (gene = index into the choice tuple): genes 0-19 kernel sizes (3, 5, 7), genes
20-39 expand ratios (3, 4, 6), genes 40-44 stage depths (2, 3, 4); block ``4 * s + b`` is block
``b`` of stage ``s`` (0-based).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hwnas_jax.spaces.ofa_layers import (
    _ACTS,
    _MAX_K,
    DepthwiseConv,
    MaskedBatchNorm,
    _bn,
    _conv,
    h_sigmoid,
    h_swish,
)
from hwnas_jax.spaces.ofa_layout import (  # noqa: F401 - re-exported
    BASE_WIDTHS,
    BN_EPS,
    BN_MOMENTUM,
    CIFAR_MAX_RESOLUTION,
    DEPTH_CHOICES,
    EXPAND_CHOICES,
    KERNEL_CHOICES,
    MAX_DEPTH,
    NUM_BLOCKS,
    NUM_GENES,
    NUM_STAGES,
    STAGE_ACTS,
    STAGE_SE,
    STAGE_STRIDES,
    Layout,
    Stage,
    decode,
    layout,
    make_divisible,
    mid_channels,
    se_channels,
    use_cifar_stem,
)

Variables = Mapping[str, Any]


class MBConv(nn.Module):
    """One MBConv block of fixed shape: expand 1x1 -> depthwise kxk -> [SE] -> project 1x1.

    Attributes:
      out_ch: output channels.
      kernel: depthwise kernel size.
      stride: depthwise stride.
      mid_ch: middle channels, or None for expand ratio 1 (no expand conv).
      se: whether a squeeze-and-excite follows the depthwise conv.
      act: 'relu' or 'h_swish'.
      dw_impl: depthwise convolution implementation (see ``depthwise_conv``).
    """

    out_ch: int
    kernel: int
    stride: int
    mid_ch: int | None
    se: bool
    act: str
    dw_impl: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """Maps ``x: [N, H, W, C_in]`` to ``[N, ceil(H / stride), ceil(W / stride), out_ch]``."""
        act = _ACTS[self.act]
        h = x
        if self.mid_ch is not None:
            h = _conv(self.mid_ch, 1, self.mid_ch, name='expand_conv')(h)
            h = act(_bn(train, 'expand_bn')(h))
        mid = h.shape[-1]
        h = DepthwiseConv(
            self.kernel, self.kernel**2 * mid, self.stride, impl=self.dw_impl, name='dw_conv'
        )(h)
        h = act(_bn(train, 'dw_bn')(h))
        if self.se:
            red = se_channels(mid)
            s = jnp.mean(h, axis=(1, 2), keepdims=True)
            s = jax.nn.relu(_conv(red, 1, red, bias=True, name='se_reduce')(s))
            s = _conv(mid, 1, mid, bias=True, name='se_expand')(s)
            h = h * h_sigmoid(s)
        h = _conv(self.out_ch, 1, self.out_ch, name='project_conv')(h)
        h = _bn(train, 'project_bn')(h)
        if self.stride == 1 and x.shape[-1] == self.out_ch:
            h = h + x
        return h


class MaskedMBConv(nn.Module):
    """An MBConv block at its largest shape (k7, largest expand) with traced choice masks.

    Attributes:
      out_ch: output channels.
      stride: depthwise stride.
      se: whether a squeeze-and-excite follows the depthwise conv.
      act: 'relu' or 'h_swish'.
      dw_impl: depthwise convolution implementation (see ``depthwise_conv``).
    """

    out_ch: int
    stride: int
    se: bool
    act: str
    dw_impl: str | None = None

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        kernel_gene: jax.Array,
        expand_gene: jax.Array,
        active: jax.Array | bool,
        *,
        train: bool,
    ) -> jax.Array:
        """Maps ``x: [N, H, W, C_in]`` to ``[N, H', W', out_ch]`` (``x`` itself if inactive).

        ``kernel_gene``, ``expand_gene``: int32 scalars (choice indices); ``active``: bool scalar.
        """
        act = _ACTS[self.act]
        in_ch = x.shape[-1]
        mids = [mid_channels(in_ch, e) for e in EXPAND_CHOICES]
        mid = jnp.asarray(mids)[expand_gene]
        ch_mask = jnp.arange(max(mids)) < mid
        update = jnp.logical_and(ch_mask, active)
        k = jnp.asarray(KERNEL_CHOICES)[kernel_gene]
        taps = jnp.abs(jnp.arange(_MAX_K) - _MAX_K // 2) <= k // 2
        k_mask = jnp.broadcast_to(
            (taps[:, None] & taps[None, :])[:, :, None, None], (_MAX_K, _MAX_K, 1, max(mids))
        ).astype(jnp.float32)

        h = _conv(max(mids), 1, mid, name='expand_conv')(x)
        h = act(MaskedBatchNorm(name='expand_bn')(h, update, train=train)) * ch_mask
        h = DepthwiseConv(
            _MAX_K, k * k * mid, self.stride, mask=k_mask, impl=self.dw_impl, name='dw_conv'
        )(h)
        h = act(MaskedBatchNorm(name='dw_bn')(h, update, train=train)) * ch_mask
        if self.se:
            reds = [se_channels(m) for m in mids]
            red = jnp.asarray(reds)[expand_gene]
            s = jnp.mean(h, axis=(1, 2), keepdims=True)
            s = _conv(max(reds), 1, red, bias=True, name='se_reduce')(s)
            s = jax.nn.relu(s) * (jnp.arange(max(reds)) < red)
            s = _conv(max(mids), 1, mid, bias=True, name='se_expand')(s)
            h = h * h_sigmoid(s)
        h = _conv(self.out_ch, 1, self.out_ch, name='project_conv')(h)
        h = MaskedBatchNorm(name='project_bn')(h, active, train=train)
        if self.stride == 1 and in_ch == self.out_ch:
            h = h + x
        if h.shape != x.shape:  # a stride or width change: a stage's first block always runs
            return h
        if isinstance(active, bool):
            return h if active else x
        return jnp.where(active, h, x)


def _check(x: jax.Array, resolution: int, feature_stages: Sequence[int]) -> None:
    if x.ndim != 4 or x.shape[1:3] != (resolution, resolution):
        raise ValueError(
            f'Expected images [N, {resolution}, {resolution}, C] for resolution '
            f'{resolution}, got shape {x.shape}.'
        )
    if not feature_stages or any(s not in range(1, NUM_STAGES + 1) for s in feature_stages):
        raise ValueError(
            f'feature_stages must be stage numbers in 1..{NUM_STAGES}, got {feature_stages}.'
        )


def _stem(x: jax.Array, lay: Layout, train: bool, dw_impl: str | None) -> jax.Array:
    x = _conv(lay.stem_ch, 3, 9 * lay.stem_ch, stride=lay.stem_stride, name='stem_conv')(x)
    x = h_swish(_bn(train, 'stem_bn')(x))
    return MBConv(lay.first_ch, 3, 1, None, False, 'relu', dw_impl, name='block0')(x, train=train)


def _head(x: jax.Array, lay: Layout, num_classes: int, train: bool) -> jax.Array:
    x = _conv(lay.final_ch, 1, lay.final_ch, name='final_expand_conv')(x)
    x = h_swish(_bn(train, 'final_expand_bn')(x))
    x = jnp.mean(x, axis=(1, 2), keepdims=True)
    x = h_swish(_conv(lay.mix_ch, 1, lay.mix_ch, name='feature_mix')(x))
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(
        num_classes,
        kernel_init=nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform'),
        name='classifier',
    )(x)


class Network(nn.Module):
    """The exact OFA MobileNetV3 subnet of a static genome.

    Attributes:
      genome: 45 gene indices (a tuple, so the module is hashable).
      num_classes: classifier outputs.
      width_mult: width multiplier, 1.0 or 1.2 (any positive value works).
      resolution: input height and width.
      feature_stages: stages (1-5) whose outputs are returned as features.
      cifar_stem: stride-1 stem and first stage; None = automatic (resolution <= 64).
      dw_impl: depthwise convolution implementation, ``'shifted'``, ``'grouped'`` or None
        (automatic: shifted products on CPU); see ``depthwise_conv``. Same parameters either way.
    """

    genome: tuple[int, ...]
    num_classes: int = 1000
    width_mult: float = 1.2
    resolution: int = 224
    feature_stages: tuple[int, ...] = (1, 3, 5)
    cifar_stem: bool | None = None
    dw_impl: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        """Classifies ``x: [N, R, R, 3]``.

        Returns:
          ``(logits [N, num_classes], features)``, the features being a tuple of the outputs
          ``[N, H_s, W_s, C_s]`` of the last active block of each stage in ``feature_stages``,
          in stage order.
        """
        _check(x, self.resolution, self.feature_stages)
        ks, es, ds = decode(self.genome)
        lay = layout(self.width_mult, use_cifar_stem(self.resolution, self.cifar_stem))
        x = _stem(x, lay, train, self.dw_impl)
        features = []
        for s, st in enumerate(lay.stages):
            for b in range(ds[s]):
                i = MAX_DEPTH * s + b
                in_ch = st.in_ch if b == 0 else st.out_ch
                x = MBConv(
                    st.out_ch,
                    ks[i],
                    st.stride if b == 0 else 1,
                    mid_channels(in_ch, es[i]),
                    st.se,
                    st.act,
                    self.dw_impl,
                    name=f'block{i + 1}',
                )(x, train=train)
            if s + 1 in self.feature_stages:
                features.append(x)
        return _head(x, lay, self.num_classes, train), tuple(features)


class PopulationNetwork(nn.Module):
    """The OFA MobileNetV3 space with the genome as a traced input (largest shapes, masked).

    Computes, for the same (sliced) weights, the function of ``Network(genome)``; ``jax.vmap``
    over variables and genomes evaluates a population with one compiled program. Gene values
    cannot be checked under tracing: validate genomes on the host (``ofa.validate``).

    Attributes: as ``Network``, without ``genome``.
    """

    num_classes: int = 1000
    width_mult: float = 1.2
    resolution: int = 224
    feature_stages: tuple[int, ...] = (1, 3, 5)
    cifar_stem: bool | None = None
    dw_impl: str | None = None

    @nn.compact
    def __call__(
        self, x: jax.Array, genome: jax.Array, *, train: bool
    ) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        """Classifies ``x: [N, R, R, 3]`` with the subnet ``genome: int32[45]``.

        Returns:
          ``(logits [N, num_classes], features)`` as ``Network``.
        """
        _check(x, self.resolution, self.feature_stages)
        genome = jnp.asarray(genome)
        if genome.shape != (NUM_GENES,):
            raise ValueError(f'An OFA genome has {NUM_GENES} genes, got shape {genome.shape}.')
        depth = jnp.asarray(DEPTH_CHOICES)[genome[2 * NUM_BLOCKS :]]
        lay = layout(self.width_mult, use_cifar_stem(self.resolution, self.cifar_stem))
        x = _stem(x, lay, train, self.dw_impl)
        features = []
        for s, st in enumerate(lay.stages):
            for b in range(MAX_DEPTH):
                i = MAX_DEPTH * s + b
                active = True if b < min(DEPTH_CHOICES) else b < depth[s]
                x = MaskedMBConv(
                    st.out_ch,
                    st.stride if b == 0 else 1,
                    st.se,
                    st.act,
                    self.dw_impl,
                    name=f'block{i + 1}',
                )(x, genome[i], genome[NUM_BLOCKS + i], active, train=train)
            if s + 1 in self.feature_stages:
                features.append(x)
        return _head(x, lay, self.num_classes, train), tuple(features)


def _slice_block(tree: Mapping[str, Any], k: int, mid: int) -> dict[str, Any]:
    """Slices one block's variables (one collection) to kernel ``k`` and ``mid`` channels."""
    red = se_channels(mid)
    lo = (_MAX_K - k) // 2
    rules: dict[tuple[str, str], Callable[[Any], Any]] = {
        ('expand_conv', 'kernel'): lambda a: a[..., :mid],
        ('dw_conv', 'kernel'): lambda a: a[lo : lo + k, lo : lo + k, :, :mid],
        ('se_reduce', 'kernel'): lambda a: a[:, :, :mid, :red],
        ('se_reduce', 'bias'): lambda a: a[:red],
        ('se_expand', 'kernel'): lambda a: a[:, :, :red, :mid],
        ('se_expand', 'bias'): lambda a: a[:mid],
        ('project_conv', 'kernel'): lambda a: a[:, :, :mid, :],
    }
    out: dict[str, Any] = {}
    for layer, leaves in tree.items():
        out[layer] = {}
        for leaf, a in leaves.items():
            if (layer, leaf) in rules:
                a = rules[(layer, leaf)](a)
            elif layer in ('expand_bn', 'dw_bn'):
                a = a[:mid]
            out[layer][leaf] = a
    return out


def exact_variables(variables: Variables, genome: Sequence[int] | np.ndarray) -> dict[str, Any]:
    """Variables of ``Network(genome)`` sliced from those of ``PopulationNetwork`` (one member).

    Skipped blocks are dropped; active blocks keep the centre ``k x k`` of each depthwise kernel
    and the first ``mid`` (and SE-reduced) channels. Every collection (params, batch_stats) is
    sliced the same way.

    Args:
      variables: unbatched variables of ``PopulationNetwork`` ({collection: tree}).
      genome: the 45 gene indices.

    Returns:
      A new {collection: tree} of plain dicts; arrays are slices (no copy of unchanged leaves).
    """
    ks, es, ds = decode(genome)
    if 'params' not in variables:
        raise ValueError('exact_variables needs the params collection (it holds the widths).')
    mids = {}  # active block index -> middle channels, from the input width of its expand conv
    for s in range(NUM_STAGES):
        for i in range(MAX_DEPTH * s, MAX_DEPTH * s + ds[s]):
            in_ch = variables['params'][f'block{i + 1}']['expand_conv']['kernel'].shape[2]
            mids[i] = mid_channels(in_ch, es[i])
    out: dict[str, Any] = {}
    for col, tree in variables.items():
        new: dict[str, Any] = {}
        for name, sub in tree.items():
            i = int(name[len('block') :]) - 1 if re.fullmatch(r'block\d+', name) else -1
            if i < 0:  # stem, first block and head are shared unchanged
                new[name] = sub
            elif i in mids:
                new[name] = _slice_block(sub, ks[i], mids[i])
        out[col] = new
    return out
