"""Hardware costs of NAS-Bench-201 architectures: HW-NAS-Bench tables and network metrics.

Entry point: :func:`cost`. What exists: :data:`METRICS`, :data:`DEVICES`, :data:`DEVICE_HAS`,
:data:`UNITS`, :func:`available`, :func:`datasets`. Tables: :func:`load_table` (packaged CIFAR-10
table or a file converted by ``tools/convert_hwnasbench.py``). Missing values: :func:`predictor`.
Penalties and constraints live in ``hwnas_jax.hardware.constraints``.
"""

from hwnas_jax.hardware.costs import (
    DATASETS,
    DEVICE_HAS,
    DEVICE_METRICS,
    DEVICES,
    METRICS,
    MISSING_POLICIES,
    NETWORK_METRICS,
    NUM_CLASSES,
    UNITS,
    available,
    cost,
    coverage,
    datasets,
    describe,
    predictor,
)
from hwnas_jax.hardware.predict import HeldOutError, OpPredictor
from hwnas_jax.hardware.tables import CostTable, clear_cache, load_table, packaged_path

__all__ = [
    'DATASETS',
    'DEVICES',
    'DEVICE_HAS',
    'DEVICE_METRICS',
    'METRICS',
    'MISSING_POLICIES',
    'NETWORK_METRICS',
    'NUM_CLASSES',
    'UNITS',
    'CostTable',
    'HeldOutError',
    'OpPredictor',
    'available',
    'clear_cache',
    'cost',
    'coverage',
    'datasets',
    'describe',
    'load_table',
    'packaged_path',
    'predictor',
]
