"""Scanned and unrolled variables of NAS-Bench-201's population network (``scan_cells``).

With ``PopulationNetwork(scan_cells=True)`` the N cells of a stage are one ``lax.scan`` whose
variables are stacked on a leading axis under ``stage{s}_cells/cell``; unrolled, they are
``cell{k}`` as in :class:`nb201_net.Network`. These convert one form into the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.core
import jax
import jax.numpy as jnp


def stage_cells(cells_per_stage: int) -> list[list[int]]:
    """The ``cell{k}`` indices of each stage's cells (the ResNet blocks left out)."""
    n = cells_per_stage
    return [list(range(s * (n + 1), s * (n + 1) + n)) for s in range(3)]


def stack_cells(variables: Mapping[str, Any], cells_per_stage: int) -> dict[str, Any]:
    """Unrolled population variables (``cell{k}``) -> scanned (``stage{s}_cells/cell``, stacked).

    The inverse of :func:`unstack_cells`; every other leaf is kept as it is.
    """
    out = {}
    for col, tree in flax.core.unfreeze(variables).items():
        tree = dict(tree)
        for s, ks in enumerate(stage_cells(cells_per_stage)):
            cells = [tree.pop(f'cell{k}') for k in ks if f'cell{k}' in tree]
            if cells:
                stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *cells)
                tree[f'stage{s}_cells'] = {'cell': stacked}
        out[col] = tree
    return out


def unstack_cells(variables: Mapping[str, Any], cells_per_stage: int) -> dict[str, Any]:
    """Scanned population variables -> unrolled (``cell{k}``), as :class:`Network` names them."""
    out = {}
    for col, tree in flax.core.unfreeze(variables).items():
        tree = dict(tree)
        for s, ks in enumerate(stage_cells(cells_per_stage)):
            stacked = tree.pop(f'stage{s}_cells', None)
            for i, k in enumerate(ks):
                if stacked is not None:
                    tree[f'cell{k}'] = jax.tree.map(lambda leaf, i=i: leaf[i], stacked['cell'])
        out[col] = tree
    return out


def unrolled(variables: Mapping[str, Any]) -> dict[str, Any]:
    """`variables` in the unrolled form, whichever form they are in."""
    variables = flax.core.unfreeze(variables)
    stacked = [sub for tree in variables.values() for k, sub in tree.items() if k[:5] == 'stage']
    if not stacked:
        return variables
    return unstack_cells(variables, len(jax.tree.leaves(stacked[0])[0]))
