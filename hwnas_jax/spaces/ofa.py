"""The Once-for-All MobileNetV3 search space: genome codec, Flax networks and analytic cost.

The space of OFA's ``ofa_mbv3_d234_e346_k357_w{1.0,1.2}`` supernets (Cai, Gan, Wang, Zhang,
Han. "Once-for-All: Train One Network and Specialize it for Efficient Deployment". ICLR 2020):
five elastic stages of up to four MBConv blocks, each block with kernel size in {3, 5, 7} and
expand ratio in {3, 4, 6}, each stage with depth in {2, 3, 4}.

A genome is an integer array of 45 choice indices: 20 kernel genes, 20 expand genes and 5 depth
genes (see ``ofa_layout`` for the layout); the genes of skipped blocks are ignored, and
``canonical`` zeroes them so that functionally identical genomes compare equal. ``to_config``
and ``from_config`` convert to and from OFA's own subnet config ``{"ks": [20], "e": [20],
"d": [5]}``.

Costs follow OFA's counting convention (``ofa/utils/flops_counter.py`` and
``MBv3LatencyTable.count_flops_given_config``): multiply-accumulates of convolutions
(``c_in * k_h * k_w / groups`` per output element, the squeeze-and-excite convolutions at 1x1)
and linear layers; BatchNorm, activations, pooling, biases and additions count zero.
Parameters are the trainable ones: conv and linear weights, BatchNorm scale and bias, SE and
classifier biases.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hwnas_jax.spaces import ofa_layout
from hwnas_jax.spaces.ofa_layout import (
    DEPTH_CHOICES,
    EXPAND_CHOICES,
    KERNEL_CHOICES,
    MAX_DEPTH,
    NUM_BLOCKS,
    NUM_GENES,
    NUM_STAGES,
    Layout,
    decode,
    layout,
    make_divisible,
    mid_channels,
    se_channels,
    use_cifar_stem,
)

__all__ = [
    'CARDINALITIES',
    'DEPTH_CHOICES',
    'EXPAND_CHOICES',
    'KERNEL_CHOICES',
    'NAME',
    'NUM_GENES',
    'canonical',
    'describe',
    'from_config',
    'layout',
    'macs',
    'make_divisible',
    'mbconv_macs',
    'num_params',
    'random_genomes',
    'to_config',
    'validate',
]

NAME = 'ofa'
CARDINALITIES = np.array(
    [len(KERNEL_CHOICES)] * NUM_BLOCKS
    + [len(EXPAND_CHOICES)] * NUM_BLOCKS
    + [len(DEPTH_CHOICES)] * NUM_STAGES,
    dtype=np.int64,
)
CARDINALITIES.setflags(write=False)

Genome = Sequence[int] | np.ndarray


def validate(genome: Genome) -> np.ndarray:
    """Checks a genome and returns it as a fresh ``int64[45]`` array.

    Raises:
      ValueError: wrong length or shape, non-integer genes, or a gene outside its choices.
    """
    g = np.asarray(genome)
    decode(g)  # raises the shape, dtype and range errors
    return g.astype(np.int64)


def canonical(genome: Genome) -> tuple[int, ...]:
    """The genome with the kernel and expand genes of skipped blocks set to 0, as a tuple."""
    g = validate(genome)
    _, _, ds = decode(g)
    for s, d in enumerate(ds):
        for b in range(d, MAX_DEPTH):
            g[MAX_DEPTH * s + b] = 0
            g[NUM_BLOCKS + MAX_DEPTH * s + b] = 0
    return tuple(int(v) for v in g)


def to_config(genome: Genome) -> dict[str, list[int]]:
    """OFA's subnet config ``{"ks": [20], "e": [20], "d": [5]}`` (skipped blocks kept as is)."""
    ks, es, ds = decode(validate(genome))
    return {'ks': ks, 'e': es, 'd': ds}


def from_config(cfg: Mapping[str, Any]) -> np.ndarray:
    """The ``int64[45]`` genome of an OFA subnet config.

    Args:
      cfg: ``{"ks": [20], "e": [20], "d": [5]}``; the keys ``"r"`` and ``"wid"`` of OFA's
        tutorial and EvoXBench specs are accepted and ignored (resolution is the caller's).

    Raises:
      TypeError: ``cfg`` is not a mapping.
      ValueError: a missing or unknown key, a wrong length, or a value outside the choices.
    """
    if not isinstance(cfg, Mapping):
        raise TypeError(f'An OFA config is a mapping with keys ks, e, d; got {type(cfg)}.')
    unknown = set(cfg) - {'ks', 'e', 'd', 'r', 'wid'}
    if unknown:
        raise ValueError(f'Unknown OFA config keys {sorted(unknown)}; expected ks, e, d.')
    genes = []
    for key, choices, n in (
        ('ks', KERNEL_CHOICES, NUM_BLOCKS),
        ('e', EXPAND_CHOICES, NUM_BLOCKS),
        ('d', DEPTH_CHOICES, NUM_STAGES),
    ):
        if key not in cfg:
            raise ValueError(f'OFA config lacks the key {key!r}.')
        values = list(cfg[key])
        if len(values) != n:
            raise ValueError(f'OFA config {key!r} needs {n} values, got {len(values)}.')
        for j, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v not in choices:
                raise ValueError(f'OFA config {key}[{j}] = {v!r} is not one of {choices}.')
            genes.append(choices.index(int(v)))
    return np.asarray(genes, dtype=np.int64)


def random_genomes(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` genomes with every gene uniform over its choices: ``int64[n, 45]``."""
    if n < 0:
        raise ValueError(f'n must be non-negative, got {n}.')
    return rng.integers(0, CARDINALITIES, size=(n, NUM_GENES), dtype=np.int64)


def _conv_out(size: int, stride: int) -> int:
    """Output size of a conv padded by ``k // 2`` (odd k): ``ceil(size / stride)``."""
    return (size - 1) // stride + 1


def mbconv_macs(
    in_ch: int,
    mid_ch: int | None,
    out_ch: int,
    kernel: int,
    stride: int,
    in_size: int,
    se_ch: int = 0,
) -> tuple[int, int]:
    """MACs of one MBConv block in OFA's convention, and its output size.

    ``in_size`` is the input height (= width); ``mid_ch=None`` means expand ratio 1 (no expand
    conv, depthwise over ``in_ch``); ``se_ch > 0`` adds the two SE convs at 1x1.

    Returns:
      ``(macs, out_size)``: the block's multiply-accumulates (an int) and output height.
    """
    out_size = _conv_out(in_size, stride)
    total = 0
    if mid_ch is None:
        mid_ch = in_ch
    else:
        total += in_ch * mid_ch * in_size**2
    total += mid_ch * kernel**2 * out_size**2
    total += 2 * mid_ch * se_ch
    total += mid_ch * out_ch * out_size**2
    return total, out_size


def _blocks(genome: Genome, lay: Layout) -> list[tuple[int, int, int, int, int, int]]:
    """(in_ch, mid_ch, out_ch, kernel, stride, se_ch) of every active stage block."""
    ks, es, ds = decode(validate(genome))
    out = []
    for s, st in enumerate(lay.stages):
        for b in range(ds[s]):
            i = MAX_DEPTH * s + b
            in_ch = st.in_ch if b == 0 else st.out_ch
            mid = mid_channels(in_ch, es[i])
            out.append(
                (
                    in_ch,
                    mid,
                    st.out_ch,
                    ks[i],
                    st.stride if b == 0 else 1,
                    se_channels(mid) if st.se else 0,
                )
            )
    return out


def macs(
    genome: Genome,
    resolution: int = 224,
    num_classes: int = 1000,
    width_mult: float = 1.2,
    *,
    cifar_stem: bool | None = None,
) -> float:
    """Multiply-accumulates of the subnet at ``resolution``, in millions (OFA's convention).

    The CIFAR stem (stride-1 stem and first stage) applies as in ``Network``: automatically for
    ``resolution <= 64`` unless ``cifar_stem`` says otherwise.
    """
    lay = layout(width_mult, use_cifar_stem(resolution, cifar_stem))
    size = _conv_out(resolution, lay.stem_stride)
    total = 3 * lay.stem_ch * 9 * size**2
    m, size = mbconv_macs(lay.stem_ch, None, lay.first_ch, 3, 1, size)
    total += m
    for in_ch, mid, out_ch, k, stride, red in _blocks(genome, lay):
        m, size = mbconv_macs(in_ch, mid, out_ch, k, stride, size, red)
        total += m
    total += lay.stages[-1].out_ch * lay.final_ch * size**2
    total += lay.final_ch * lay.mix_ch + lay.mix_ch * num_classes
    return total / 1e6


def num_params(genome: Genome, num_classes: int = 1000, width_mult: float = 1.2) -> float:
    """Trainable parameters of the subnet in millions (weights, BN scale/bias, biases)."""
    lay = layout(width_mult)
    c0, c1 = lay.stem_ch, lay.first_ch
    total = 27 * c0 + 2 * c0 + 9 * c0 + 2 * c0 + c0 * c1 + 2 * c1
    for in_ch, mid, out_ch, k, _, red in _blocks(genome, lay):
        total += in_ch * mid + 2 * mid + k * k * mid + 2 * mid + mid * out_ch + 2 * out_ch
        if red:
            total += mid * red + red + red * mid + mid
    last = lay.stages[-1].out_ch
    total += last * lay.final_ch + 2 * lay.final_ch
    total += lay.final_ch * lay.mix_ch + lay.mix_ch * num_classes + num_classes
    return total / 1e6


def describe(
    genome: Genome,
    *,
    resolution: int = 224,
    num_classes: int = 1000,
    width_mult: float = 1.2,
    cifar_stem: bool | None = None,
) -> dict[str, Any]:
    """A JSON-able description: genome, canonical genome, OFA config, MACs and params (in M)."""
    g = validate(genome)
    cfg = to_config(canonical(g))
    return {
        'space': NAME,
        'genome': [int(v) for v in g],
        'canonical': list(canonical(g)),
        'config': {**cfg, 'r': [int(resolution)]},
        'width_mult': float(width_mult),
        'resolution': int(resolution),
        'cifar_stem': use_cifar_stem(resolution, cifar_stem),
        'macs': macs(g, resolution, num_classes, width_mult, cifar_stem=cifar_stem),
        'params': num_params(g, num_classes, width_mult),
    }


@functools.lru_cache(maxsize=32)
def cost_tables(
    metric: str,
    *,
    resolution: int = 224,
    num_classes: int = 1000,
    width_mult: float = 1.2,
    cifar_stem: bool | None = None,
) -> tuple[float, np.ndarray]:
    """Per-block cost tables of the OFA space, in millions (MACs or parameters).

    The cost of genome g is ``base + sum_i active_i(g) * table[i, k_i(g), e_i(g)]`` over the 20
    blocks: a block's input width, stride and input size depend only on its position.

    Args:
      metric: 'macs' (also 'flops', OFA's naming) or 'params'.
      resolution, num_classes, width_mult, cifar_stem: as ``ofa.macs`` / ``ofa.num_params``.

    Returns:
      ``(base, table [20, 3, 3])``: the cost of the stem, first block and head, and of each
      block for each kernel and expand choice index.
    """
    lay = layout(width_mult, ofa_layout.use_cifar_stem(resolution, cifar_stem))
    table = np.zeros(
        (ofa_layout.NUM_BLOCKS, len(ofa_layout.KERNEL_CHOICES), len(ofa_layout.EXPAND_CHOICES))
    )
    size = (resolution - 1) // lay.stem_stride + 1
    c0, c1 = lay.stem_ch, lay.first_ch
    if metric in ('macs', 'flops'):
        base = 3 * c0 * 9 * size**2 + mbconv_macs(c0, None, c1, 3, 1, size)[0]
    elif metric == 'params':
        base = 27 * c0 + 2 * c0 + 9 * c0 + 2 * c0 + c0 * c1 + 2 * c1
    else:
        raise ValueError(f"no OFA cost table for {metric!r}; choose 'flops', 'macs' or 'params'")
    for s, st in enumerate(lay.stages):
        for b in range(ofa_layout.MAX_DEPTH):
            in_ch, stride = (st.in_ch, st.stride) if b == 0 else (st.out_ch, 1)
            for ki, k in enumerate(ofa_layout.KERNEL_CHOICES):
                for ei, e in enumerate(ofa_layout.EXPAND_CHOICES):
                    mid = ofa_layout.mid_channels(in_ch, e)
                    red = ofa_layout.se_channels(mid) if st.se else 0
                    if metric == 'params':
                        cost = (
                            in_ch * mid
                            + 2 * mid
                            + k * k * mid
                            + 2 * mid
                            + mid * st.out_ch
                            + 2 * st.out_ch
                            + (2 * mid * red + red + mid if red else 0)
                        )
                    else:
                        cost = mbconv_macs(in_ch, mid, st.out_ch, k, stride, size, red)[0]
                    table[ofa_layout.MAX_DEPTH * s + b, ki, ei] = cost
            size = (size - 1) // stride + 1
    last = lay.stages[-1].out_ch
    if metric == 'params':
        base += last * lay.final_ch + 2 * lay.final_ch + lay.final_ch * lay.mix_ch
        base += lay.mix_ch * num_classes + num_classes
    else:
        base += last * lay.final_ch * size**2 + lay.final_ch * lay.mix_ch
        base += lay.mix_ch * num_classes
    table = table / 1e6
    table.setflags(write=False)  # Cached and shared: read only.
    return base / 1e6, table


def batch_costs(genomes: np.ndarray, base: float, table: np.ndarray) -> np.ndarray:
    """[n] costs of OFA genomes [n, 45] from ``cost_tables`` (genes not checked)."""
    g = np.asarray(genomes)
    nb, depth = ofa_layout.NUM_BLOCKS, ofa_layout.MAX_DEPTH
    per_block = table[np.arange(nb), g[:, :nb], g[:, nb : 2 * nb]]
    depths = np.asarray(ofa_layout.DEPTH_CHOICES)[g[:, 2 * nb :]]
    active = np.tile(np.arange(depth), ofa_layout.NUM_STAGES) < np.repeat(depths, depth, axis=1)
    return base + np.sum(per_block * active, axis=1)
