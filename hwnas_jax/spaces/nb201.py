"""The NAS-Bench-201 search space: genome codecs, analytic costs and the Flax networks.

NAS-Bench-201 (Dong & Yang, ICLR 2020) searches one cell, a DAG of 4 nodes (node 0 is the cell
input, node 3 its output) with an edge i -> j for every i < j. Each of the 6 edges carries one
of 5 operations, in NAS-Bench-201's order (:data:`OPS`)::

    0 none          outputs zeros
    1 skip_connect  identity
    2 nor_conv_1x1  ReLU - Conv 1x1 - BN
    3 nor_conv_3x3  ReLU - Conv 3x3 - BN
    4 avg_pool_3x3  average pooling, stride 1, padding 1, not counting the padding

Node j is the sum over i < j of op_ij(node i), so the space holds 5^6 = 15625 cells.

Encodings of one architecture:
  * genome: 6 integers in [0, 4], one op index per edge, in the order of :data:`EDGES`:
    1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2. Functions take any integer sequence or array and
    check it with :func:`validate`; batched functions take arrays [..., 6].
  * arch string: NAS-Bench-201's own, ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``, listing the
    inputs of nodes 1, 2 and 3 (:func:`to_arch_str`, :func:`from_arch_str`). Genome
    (3, 3, 4, 1, 3, 1), index 1, is (one line, split here)::

        |nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+
        |skip_connect~0|nor_conv_3x3~1|skip_connect~2|

  * index: the architecture's position 0..15624 in NAS-Bench-201 (and HW-NAS-Bench), which is
    not a closed-form function of the genome (:func:`to_index`, :func:`from_index`). It is
    read from the packaged asset ``assets/nb201_index.npy`` (int16 [15625]: the genome code of
    each index), written by ``tools/build_nb201_index.py`` and hash-checked on load.
  * genome code: the base-5 integer of the genome, edge 0 most significant,
    ``sum(g[e] * 5 ** (5 - e))``; used only by the asset.

The network is NAS-Bench-201's CIFAR network (xautodl ``TinyNetwork``): a 3x3 conv stem, three
stages of N cells with C, 2C and 4C channels joined by two stride-2 ResNet blocks, and a
BN-ReLU-pool-linear head. The Flax modules live in :mod:`hwnas_jax.spaces.nb201_net` (this module
needs numpy only): ``Network``, ``PopulationNetwork``, ``exact_variables``.

The analytic costs (``num_params``, ``flops``, ``activation_elements``) and ``describe`` are in
:mod:`hwnas_jax.spaces.nb201_costs`.

References:
  Dong, Yang. "NAS-Bench-201: Extending the Scope of Reproducible Neural Architecture Search".
    ICLR 2020.
  Li et al. "HW-NAS-Bench: Hardware-Aware Neural Architecture Search Benchmark". ICLR 2021
    (the same index order).
"""

from __future__ import annotations

import functools
import hashlib
import io
import pathlib
from typing import Any

import numpy as np

from hwnas_jax import fileio
from hwnas_jax.errors import UserError

NAME = 'nb201'
OPS = ('none', 'skip_connect', 'nor_conv_1x1', 'nor_conv_3x3', 'avg_pool_3x3')
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (target node, source node).
NUM_EDGES = 6
NUM_OPS = 5
CARDINALITIES = np.full(NUM_EDGES, NUM_OPS)
CARDINALITIES.setflags(write=False)
NUM_ARCHS = NUM_OPS**NUM_EDGES

_NONE, _SKIP, _CONV1, _CONV3, _POOL = range(NUM_OPS)
_OP_INDEX = {op: k for k, op in enumerate(OPS)}
_PLACES = NUM_OPS ** np.arange(NUM_EDGES - 1, -1, -1, dtype=np.int64)  # Edge 0 most significant.

_INDEX_ASSET = 'nb201_index.npy'
# sha256 of the asset's int16 little-endian contents (not of the .npy file, whose header may
# vary between numpy versions).
_INDEX_SHA256 = '1d3bb98de011b645ca1cf0585b09293d60b9456cac5d10e6ca296bbb3c55513e'

_GENOME_FORM = (
    f'a NAS-Bench-201 genome is {NUM_EDGES} integers in [0, {NUM_OPS - 1}], one per edge in the '
    f'order 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2, each an index into {OPS}'
)
_ARCH_STR_FORM = '|op~0|+|op~0|op~1|+|op~0|op~1|op~2|'

GenomeLike = Any  # A sequence or array of 6 integers.


def _short(x: Any) -> str:
    s = repr(x)
    return s if len(s) <= 120 else s[:117] + '...'


def _as_genomes(genomes: GenomeLike) -> np.ndarray:
    """int64 [..., 6] copy of one genome [6] or a batch [..., 6]; UserError if malformed."""
    try:
        a = np.asarray(genomes)
    except (ValueError, TypeError) as e:
        raise UserError(f'{_GENOME_FORM}; got {_short(genomes)} ({e})') from None
    if not np.issubdtype(a.dtype, np.integer):
        raise UserError(
            f'{_GENOME_FORM}; got non-integer values (dtype {a.dtype}): {_short(genomes)}'
        )
    if a.ndim == 0 or a.shape[-1] != NUM_EDGES:
        raise UserError(f'{_GENOME_FORM}; got shape {a.shape}: {_short(genomes)}')
    if a.size and (a.min() < 0 or a.max() >= NUM_OPS):
        raise UserError(f'{_GENOME_FORM}; got values out of range: {_short(genomes)}')
    return a.astype(np.int64)


def validate(genome: GenomeLike) -> np.ndarray:
    """Checks one genome and returns it as a fresh int64 array.

    Args:
      genome: [6] integers in [0, 4] (any sequence or integer array).

    Returns:
      int64 [6].

    Raises:
      UserError: wrong length or shape, non-integer values (floats, bools, strings), or values
        outside [0, 4]; the message says what a genome must be.
    """
    g = _as_genomes(genome)
    if g.shape != (NUM_EDGES,):
        raise UserError(
            f'{_GENOME_FORM}; got shape {g.shape} (one genome expected): {_short(genome)}'
        )
    return g


def random_genomes(rng: np.random.Generator, n: int) -> np.ndarray:
    """n genomes drawn uniformly from the space: int64 [n, 6]."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f'rng must be a numpy.random.Generator, got {type(rng).__name__}')
    if int(n) != n or n < 0:
        raise UserError(f'n must be a non-negative integer, got {n!r}')
    return rng.integers(0, NUM_OPS, size=(int(n), NUM_EDGES), dtype=np.int64)


# -- arch strings ------------------------------------------------------------------------------


def to_arch_str(genome: GenomeLike) -> str:
    """NAS-Bench-201's arch string of a genome, ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``."""
    g = validate(genome)
    nodes = []
    for j in range(1, 4):
        nodes.append(
            '|' + '|'.join(f'{OPS[g[e]]}~{i}' for e, (t, i) in enumerate(EDGES) if t == j) + '|'
        )
    return '+'.join(nodes)


def from_arch_str(s: str) -> tuple[int, ...]:
    """The genome of a NAS-Bench-201 arch string (the inverse of :func:`to_arch_str`).

    Args:
      s: e.g. ``|nor_conv_1x1~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|``.

    Returns:
      The genome, 6 ints.

    Raises:
      UserError: `s` is not of the form ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` with each op
        in :data:`OPS` (the message quotes `s` and says what is wrong).
      TypeError: `s` is not a string.
    """

    def bad(why: str) -> UserError:
        return UserError(
            f'malformed NAS-Bench-201 arch string {_short(s)}: {why}; expected '
            f'the form {_ARCH_STR_FORM!r} with each op one of {OPS}'
        )

    if not isinstance(s, str):
        raise TypeError(
            f'a NAS-Bench-201 arch string must be a str, got {type(s).__name__}: {_short(s)}'
        )
    nodes = s.split('+')
    if len(nodes) != 3:
        raise bad(f'{len(nodes)} nodes separated by "+", expected 3')
    genome = []
    for j, node in enumerate(nodes, start=1):
        if len(node) < 2 or node[0] != '|' or node[-1] != '|':
            raise bad(f'node {j} {node!r} does not start and end with "|"')
        tokens = node[1:-1].split('|')
        if len(tokens) != j:
            raise bad(f'node {j} has {len(tokens)} inputs, expected {j}')
        for i, token in enumerate(tokens):
            op, sep, source = token.partition('~')
            if op not in _OP_INDEX:
                raise bad(f'unknown op {op!r} in {token!r}')
            if not sep or source != str(i):
                raise bad(f'input {token!r} of node {j} should read {op}~{i}')
            genome.append(_OP_INDEX[op])
    return tuple(genome)


# -- NAS-Bench-201 index -------------------------------------------------------------------------


_INDEX_FIX = (
    'reinstall hwnas_jax (pip install --force-reinstall --no-deps hwnas_jax; in a '
    f'checkout, git checkout hwnas_jax/assets/{_INDEX_ASSET})'
)


def _index_asset_path() -> pathlib.Path:
    return fileio.asset_path(_INDEX_ASSET)


@functools.cache
def _index_tables() -> tuple[np.ndarray, np.ndarray]:
    """(code_of_index [15625], index_of_code [15625]), int64, read-only, from the asset.

    Raises:
      UserError: the packaged asset is missing, damaged or changed (naming it; reinstall).
    """
    path = _index_asset_path()
    what = 'the packaged NAS-Bench-201 index'
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f'{path}: {what} is missing; {_INDEX_FIX}') from None
    except OSError as e:
        raise UserError(f'{path}: cannot read {what} ({e.strerror}); {_INDEX_FIX}') from None
    try:
        codes = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as e:  # noqa: BLE001
        # Parsing bytes in memory: any failure means a damaged file. Besides OSError, EOFError
        # and ValueError, numpy's header parser lets tokenize.TokenError and SyntaxError out.
        # ValueError includes numpy's "pickled data" refusal, whose advice (load it unsafely)
        # must not reach the user: the file is simply not the one the package ships.
        if not isinstance(e, (OSError, EOFError, ValueError)):
            reason = f'unreadable .npy header: {type(e).__name__}'
        else:
            reason = 'not a plain array' if 'pickle' in str(e) else str(e) or type(e).__name__
        raise UserError(f'{path}: {what} is damaged ({reason}); {_INDEX_FIX}') from None
    if (
        not isinstance(codes, np.ndarray)
        or codes.dtype != np.dtype('<i2')
        or codes.shape != (NUM_ARCHS,)
    ):
        got = f'{codes.dtype} {codes.shape}' if isinstance(codes, np.ndarray) else 'an npz'
        if hasattr(codes, 'close'):
            codes.close()
        raise UserError(
            f'{path}: {what} is damaged (expected int16 [{NUM_ARCHS}], got {got}); {_INDEX_FIX}'
        )
    digest = hashlib.sha256(codes.tobytes()).hexdigest()
    if digest != _INDEX_SHA256:
        raise UserError(
            f'{path}: {what} changed (content sha256 {digest[:12]}..., expected '
            f'{_INDEX_SHA256[:12]}...: the file was modified or damaged); '
            f'{_INDEX_FIX}'
        )
    codes = codes.astype(np.int64)
    index_of_code = np.full(NUM_ARCHS, -1, np.int64)
    index_of_code[codes] = np.arange(NUM_ARCHS)
    if np.any(index_of_code < 0):  # Unreachable given the hash; cheap insurance.
        raise RuntimeError(f'{path}: not a permutation of the {NUM_ARCHS} genome codes')
    codes.setflags(write=False)
    index_of_code.setflags(write=False)
    return codes, index_of_code


def _as_indices(indices: Any) -> np.ndarray:
    a = np.asarray(indices)
    if not np.issubdtype(a.dtype, np.integer):
        raise UserError(
            f'NAS-Bench-201 indices must be integers in [0, {NUM_ARCHS}), got '
            f'dtype {a.dtype}: {_short(indices)}'
        )
    if a.size and (a.min() < 0 or a.max() >= NUM_ARCHS):
        raise UserError(f'NAS-Bench-201 indices must be in [0, {NUM_ARCHS}), got {_short(indices)}')
    return a.astype(np.int64)


def genomes_to_indices(genomes: GenomeLike) -> np.ndarray:
    """NAS-Bench-201 indices of genomes [..., 6]: int64 [...]."""
    g = _as_genomes(genomes)
    return _index_tables()[1][g @ _PLACES]


def indices_to_genomes(indices: Any) -> np.ndarray:
    """Genomes of NAS-Bench-201 indices [...]: int64 [..., 6]."""
    codes = _index_tables()[0][_as_indices(indices)]
    return (codes[..., None] // _PLACES) % NUM_OPS


def to_index(genome: GenomeLike) -> int:
    """NAS-Bench-201 index (0..15624) of one genome."""
    return int(_index_tables()[1][validate(genome) @ _PLACES])


def from_index(index: int) -> tuple[int, ...]:
    """Genome of one NAS-Bench-201 index (0..15624)."""
    a = _as_indices(index)
    if a.ndim:
        raise UserError(
            f'from_index takes one index, got shape {a.shape}; use indices_to_genomes for arrays'
        )
    return tuple(int(v) for v in indices_to_genomes(a))


# -- equivalence ---------------------------------------------------------------------------------


def canonical(genome: GenomeLike) -> tuple[int, ...]:
    """One representative of the genome's class of functionally identical cells.

    Keeps the op of an edge i -> j only if the edge lies on a path from the input (node 0) to
    the output (node 3) of edges whose op is not ``none``; every other edge is set to ``none``
    (0). Such an edge cannot influence the cell output: its target node does not reach the
    output, or its source node is identically zero (no non-``none`` path from the input), and
    ``skip_connect`` and ``avg_pool_3x3`` map zeros to zeros. The rule is applied in one pass
    (the result is a fixed point, so the function is idempotent).

    Caveat: a conv op fed by an all-zero node outputs its BatchNorm shift (beta; in eval mode
    ``beta - gamma * mean / sqrt(var + eps)``), a learned constant independent of the input.
    The networks of a genome and of its canonical form are therefore identical at
    initialisation (beta = 0) but may drift apart in training. NAS-Bench-201's own
    ``to_unique_str(consider_zero=True)`` makes the same approximation.

    The equivalence is sound but not complete: isomorphic cells (e.g. swapped parallel
    branches) or a ``skip_connect`` chain versus a direct edge are not merged.

    Args:
      genome: [6] ints.

    Returns:
      The canonical genome, 6 ints; ``canonical(canonical(g)) == canonical(g)``.
    """
    g = [int(v) for v in validate(genome)]
    from_input = [True, False, False, False]
    for e, (j, i) in enumerate(EDGES):  # EDGES are sorted by target node.
        if g[e] != _NONE and from_input[i]:
            from_input[j] = True
    to_output = [False, False, False, True]
    for e in reversed(range(NUM_EDGES)):
        j, i = EDGES[e]
        if g[e] != _NONE and to_output[j]:
            to_output[i] = True
    return tuple(op if from_input[i] and to_output[j] else _NONE for op, (j, i) in zip(g, EDGES))
