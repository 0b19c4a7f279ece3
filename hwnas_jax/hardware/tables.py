"""HW-NAS-Bench cost tables for NAS-Bench-201: a safe npz format, validated and hashed on load.

A table file is a compressed ``.npz`` holding only plain arrays (it loads with
``allow_pickle=False``):

* ``"<dataset>__<metric>"``: float64 ``[15625]`` per dataset and HW-NAS-Bench metric, indexed by
  the NAS-Bench-201 architecture index. NaN means "not available" (a value the source lacks, or
  the ``-1.0`` sentinel of ``edgetpu_latency``); it is never a number.
* ``"genomes"``: int8 ``[15625, 6]``, the op index per edge of every architecture, read from the
  source's own architecture strings. It pins the index order and is checked against
  :func:`hwnas_jax.spaces.nb201.indices_to_genomes` on load.
* ``"metadata"``: uint8, the UTF-8 bytes of a JSON object: format and version, datasets and
  metrics, units, provenance, the sha256 of the converter's inputs, and ``data_sha256``, a
  digest of all other arrays (names, dtypes, shapes, bytes) that is recomputed on load.

The packaged table (``hwnas_jax/assets/hwnasbench_nb201.npz``, CIFAR-10 only) is written by
``tools/convert_hwnasbench.py``; its digest is also pinned in this module, so editing both data
and metadata is detected too. The converter writes user tables with all three datasets from the
original ``HW-NAS-Bench-v1_0.pickle``. Loading is cached: a repeated load costs a dict lookup.

Data: HW-NAS-Bench (Li et al., ICLR 2021), MIT licence; see ``assets/NOTICE-hwnasbench.txt``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
import types
from collections.abc import Mapping
from typing import Any, Union

import numpy as np

from hwnas_jax import fileio
from hwnas_jax.errors import UserError

FORMAT = 'hwnas_jax.hwnasbench_nb201'
FORMAT_VERSION = 1
NUM_ARCHS = 15625
NUM_EDGES = 6
NUM_OPS = 5
DATASETS = ('cifar10', 'cifar100', 'ImageNet16-120')
TABLE_METRICS = (
    'edgegpu_latency',
    'edgegpu_energy',
    'raspi4_latency',
    'edgetpu_latency',
    'pixel3_latency',
    'eyeriss_latency',
    'eyeriss_energy',
    'eyeriss_arithmetic_intensity',
    'fpga_latency',
    'fpga_energy',
)
# Upstream README: latency in ms per image (batch 1, GATECH-EIC/HW-NAS-Bench#7), energy in mJ;
# the arithmetic intensity is a ratio (the upstream notebook's "mJ" is a typo).
TABLE_UNITS = {m: ('mJ' if m.endswith('_energy') else 'ms') for m in TABLE_METRICS}
TABLE_UNITS['eyeriss_arithmetic_intensity'] = '1'
PACKAGED_NAME = 'hwnasbench_nb201.npz'
# data_sha256 of the packaged table; regenerate with tools/convert_hwnasbench.py and update.
PACKAGED_DATA_SHA256 = '9b0331c0789acfa846681e1dd4651a766119abb176636c84f2fde659a9ee390b'
SEP = '__'
WHAT = 'HW-NAS-Bench table'
# What to do about a damaged table: the packaged one comes with the package, a user table from
# the converter.
FIX_PACKAGED = (
    'reinstall hwnas_jax (pip install --force-reinstall --no-deps hwnas_jax; in a checkout, '
    f'git checkout hwnas_jax/assets/{PACKAGED_NAME})'
)
FIX_USER = (
    'check config.hardware.table (leave it empty for the packaged CIFAR-10 table) or re-create '
    'the file with `python tools/convert_hwnasbench.py --pickle HW-NAS-Bench-v1_0.pickle '
    '--i-trust-this-pickle --out <file>.npz`'
)

TableSource = Union[None, str, 'os.PathLike[str]', 'CostTable']


@dataclasses.dataclass(frozen=True, eq=False)
class CostTable:
    """A validated, read-only HW-NAS-Bench table.

    Attributes:
      columns: ``{(dataset, metric): float64 [15625]}``, read-only; NaN = not available.
      genomes: int8 ``[15625, 6]``, op index per edge, by NAS-Bench-201 index.
      metadata: the parsed metadata JSON (format, units, provenance, input hashes).
      source: the file it came from (``"<packaged>"`` for the packaged table).
      digest: ``data_sha256``, the content digest checked on load.
    """

    columns: Mapping[tuple[str, str], np.ndarray]
    genomes: np.ndarray
    metadata: Mapping[str, Any]
    source: str
    digest: str

    @property
    def datasets(self) -> tuple[str, ...]:
        """Datasets present, in the order of :data:`DATASETS`."""
        present = {d for d, _ in self.columns}
        return tuple(d for d in DATASETS if d in present)

    def metrics(self, dataset: str) -> tuple[str, ...]:
        """HW-NAS-Bench metrics present for ``dataset``, in the order of :data:`TABLE_METRICS`."""
        present = {m for d, m in self.columns if d == dataset}
        return tuple(m for m in TABLE_METRICS if m in present)

    def require_dataset(self, dataset: str) -> None:
        """Raises a UserError (listing what exists, how to get more) if ``dataset`` is absent."""
        if dataset not in self.datasets:
            raise UserError(
                f'dataset {dataset!r} is not in the HW-NAS-Bench table {self.source}; it has '
                f'{list(self.datasets)}. {_how_to_get_more()}'
            )

    def column(self, dataset: str, metric: str) -> np.ndarray:
        """The float64 ``[15625]`` column of ``metric`` on ``dataset`` (NaN = not available).

        Raises:
          UserError: the table lacks the dataset or the metric; the message lists what exists.
        """
        self.require_dataset(dataset)
        key = (dataset, metric)
        if key not in self.columns:
            raise UserError(
                f'metric {metric!r} is not in the HW-NAS-Bench table {self.source} for '
                f'{dataset!r}; it has {list(self.metrics(dataset))}.'
            )
        return self.columns[key]


def _how_to_get_more() -> str:
    return (
        'The packaged table holds CIFAR-10 only; for cifar100 and ImageNet16-120, convert the '
        'original HW-NAS-Bench-v1_0.pickle (GATECH-EIC/HW-NAS-Bench) with '
        '`python tools/convert_hwnasbench.py --pickle HW-NAS-Bench-v1_0.pickle '
        '--i-trust-this-pickle --out hwnasbench_full.npz` and pass that file as `table` '
        '(config.hardware.table).'
    )


def packaged_path() -> str:
    """Path of the packaged CIFAR-10 table inside the installed package."""
    return str(fileio.asset_path(PACKAGED_NAME))


def column_key(dataset: str, metric: str) -> str:
    """The npz member name of one column."""
    return f'{dataset}{SEP}{metric}'


def data_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 over every array but ``metadata``: sorted names, dtypes, shapes and raw bytes."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        if name == 'metadata':
            continue
        a = np.ascontiguousarray(arrays[name])
        h.update(f'{name}|{a.dtype.str}|{a.shape}|'.encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write_table(
    path: str | os.PathLike[str],
    columns: Mapping[tuple[str, str], np.ndarray],
    genomes: np.ndarray,
    metadata: Mapping[str, Any],
) -> str:
    """Validates and writes a table file atomically (temp file, then ``os.replace``).

    Args:
      path: output ``.npz`` path.
      columns: ``{(dataset, metric): [15625] floats}``, NaN where not available.
      genomes: ``[15625, 6]`` ints in 0..4, the genome of every NAS-Bench-201 index.
      metadata: JSON-serialisable provenance; format, units, lists and ``data_sha256`` are added.

    Returns:
      The ``data_sha256`` written into the metadata.
    """
    arrays: dict[str, np.ndarray] = {'genomes': np.asarray(genomes).astype(np.int8)}
    for (dataset, metric), col in columns.items():
        arrays[column_key(dataset, metric)] = np.asarray(col, dtype='<f8')
    meta = dict(metadata)
    present = sorted({d for d, _ in columns}, key=DATASETS.index)
    meta.update(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        num_archs=NUM_ARCHS,
        datasets=present,
        metrics={d: [m for m in TABLE_METRICS if (d, m) in columns] for d in present},
        units={m: TABLE_UNITS[m] for m in TABLE_METRICS},
        missing_value='NaN',
        index_order="NAS-Bench-201 architecture index; 'genomes' holds its op index per edge",
        data_sha256=data_digest(arrays),
    )
    arrays['metadata'] = np.frombuffer(json.dumps(meta, indent=1).encode(), dtype=np.uint8)
    _validate(arrays, meta, str(path), 'fix the converter input')
    fileio.atomic_write_npz(path, compressed=True, **arrays)
    return meta['data_sha256']


def _validate(arrays: Mapping[str, np.ndarray], meta: Any, where: str, fix: str = FIX_USER) -> None:
    """Checks format, units, members, shapes, values, content digest and index order.

    Raises:
      UserError: naming ``where``, what is wrong and ``fix``.
    """

    def bad(msg: str) -> UserError:
        return UserError(f'{where}: invalid {WHAT}: {msg}; {fix}')

    if not isinstance(meta, dict):
        raise bad(f'its metadata is a {type(meta).__name__}, not a JSON object')
    if meta.get('format') != FORMAT or meta.get('format_version') != FORMAT_VERSION:
        raise bad(
            f'format {meta.get("format")!r} v{meta.get("format_version")!r}, expected '
            f'{FORMAT!r} v{FORMAT_VERSION}'
        )
    if meta.get('num_archs') != NUM_ARCHS:
        raise bad(f'num_archs {meta.get("num_archs")!r} != {NUM_ARCHS}')
    units = meta.get('units')
    units = units if isinstance(units, dict) else {}
    for m in TABLE_METRICS:
        if units.get(m) != TABLE_UNITS[m]:
            raise bad(f'unit of {m} is {units.get(m)!r}, expected {TABLE_UNITS[m]!r}')
    datasets = meta.get('datasets')
    if not isinstance(datasets, list) or not datasets or any(d not in DATASETS for d in datasets):
        raise bad(f'datasets {datasets!r}; allowed {list(DATASETS)}')
    metrics_of = meta.get('metrics')
    metrics_of = metrics_of if isinstance(metrics_of, dict) else {}
    expected = {'metadata', 'genomes'}
    for d in datasets:
        metrics = metrics_of.get(d)
        if (
            not isinstance(metrics, list)
            or not metrics
            or any(m not in TABLE_METRICS for m in metrics)
        ):
            raise bad(f'metrics {metrics!r} for {d}; allowed {list(TABLE_METRICS)}')
        expected.update(column_key(d, m) for m in metrics)
    if set(arrays) != expected:
        raise bad(f'members {sorted(set(arrays) ^ expected)} differ from those the metadata lists')
    g = arrays['genomes']
    if g.dtype != np.int8 or g.shape != (NUM_ARCHS, NUM_EDGES) or g.min() < 0 or g.max() >= NUM_OPS:
        raise bad(f'genomes must be int8 [{NUM_ARCHS}, {NUM_EDGES}] in 0..{NUM_OPS - 1}')
    for name in sorted(expected - {'metadata', 'genomes'}):
        a = arrays[name]
        if a.dtype != np.dtype('<f8') or a.shape != (NUM_ARCHS,):
            raise bad(f'{name} is {a.dtype} {a.shape}, expected float64 ({NUM_ARCHS},)')
        known = a[~np.isnan(a)]
        if not np.all(np.isfinite(known)) or np.any(known <= 0):
            raise bad(f'{name} has infinite, zero or negative values (not-available must be NaN)')
    digest = data_digest(arrays)
    if digest != meta.get('data_sha256'):
        raise bad(
            f'content sha256 {digest} does not match the recorded {meta.get("data_sha256")} '
            '(the file was modified or damaged)'
        )
    ref = np.asarray(_nb201().indices_to_genomes(np.arange(NUM_ARCHS)))
    if not np.array_equal(ref, g):
        first = int(np.argmax(np.any(ref != g, axis=-1)))
        raise bad(
            f"index order differs from NAS-Bench-201's (first at index {first}: table "
            f'{g[first].tolist()}, nb201 {ref[first].tolist()})'
        )


def _nb201() -> Any:
    from hwnas_jax.spaces import nb201  # pylint: disable=import-outside-toplevel

    return nb201


def _build(arrays: dict[str, np.ndarray], source: str, pinned: str | None, fix: str) -> CostTable:
    try:
        meta = json.loads(arrays['metadata'].tobytes().decode())
    except (KeyError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors.
        raise UserError(f'{source}: invalid {WHAT}: unreadable metadata ({e}); {fix}') from None
    _validate(arrays, meta, source, fix)
    if pinned is not None and meta['data_sha256'] != pinned:
        raise UserError(
            f'{source}: the packaged {WHAT} changed: content sha256 {meta["data_sha256"]} is not '
            f'the pinned {pinned} (the file was replaced or modified); {fix}'
        )
    columns = {}
    for d in meta['datasets']:
        for m in meta['metrics'][d]:
            a = arrays[column_key(d, m)]
            a.setflags(write=False)
            columns[(d, m)] = a
    arrays['genomes'].setflags(write=False)
    return CostTable(
        columns=types.MappingProxyType(columns),
        genomes=arrays['genomes'],
        metadata=types.MappingProxyType(meta),
        source=source,
        digest=meta['data_sha256'],
    )


_CACHE: dict[Any, CostTable] = {}
_LOCK = threading.Lock()


def load_table(table: TableSource = None) -> CostTable:
    """Loads, validates and caches a table.

    Args:
      table: None (or ``""``) for the packaged CIFAR-10 table, a path to a converted ``.npz``,
        or a :class:`CostTable` (returned as is).

    Returns:
      The validated :class:`CostTable`. Repeated calls with an unchanged file return the cached
      object (the cache key holds the real path, size and modification time).

    Raises:
      UserError: one message naming the file and what to do when it is missing, truncated,
        corrupt or not an npz, lacks arrays, or fails validation (format, shapes, units, index
        order, sha256); for the packaged table, also when its content differs from the
        release's (the fix is to reinstall).
    """
    if isinstance(table, CostTable):
        return table
    if table == '':
        table = None  # An unset string option (config) means the packaged table too.
    packaged = table is None
    path = packaged_path() if packaged else os.path.realpath(os.fspath(table))
    fix = FIX_PACKAGED if packaged else FIX_USER
    what = f'packaged {WHAT}' if packaged else WHAT
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UserError(f'{path}: {what} not found; {fix}') from None
    except OSError as e:
        raise UserError(f'{path}: cannot read the {what} ({e.strerror}); {fix}') from None
    key = (packaged, path, st.st_size, st.st_mtime_ns)
    with _LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    arrays = _load_npz(path, what, fix)
    if packaged:
        # Messages name the real file; the table's `source` stays '<packaged>' (logs, metadata).
        loaded = dataclasses.replace(
            _build(arrays, path, PACKAGED_DATA_SHA256, fix), source='<packaged>'
        )
    else:
        loaded = _build(arrays, path, None, fix)
    with _LOCK:
        _CACHE[key] = loaded
    return loaded


def _load_npz(path: str, what: str, fix: str) -> dict[str, np.ndarray]:
    try:
        # Our own handle: numpy leaks the one it opens when the zip directory is damaged.
        with open(path, 'rb') as f:
            if f.read(6) == b'\x93NUMPY':
                raise UserError(f'{path}: {what} is a single .npy array, not an .npz table; {fix}')
            f.seek(0)
            return fileio.load_npz(f, what=what, fix=fix, keys=('metadata', 'genomes'))
    except UserError:
        raise
    except OSError as e:  # E.g. a folder where the file should be.
        raise UserError(f'{path}: cannot read the {what} ({e.strerror or e}); {fix}') from None
    except Exception as e:  # noqa: BLE001
        # Failures fileio.load_npz does not translate, all meaning a damaged file: zipfile's
        # NotImplementedError / RuntimeError for flipped bits in a member header (compression
        # method, "encrypted" flag, version), numpy's tokenize.TokenError / SyntaxError for a
        # garbled .npy header, MemoryError for a garbled shape.
        raise UserError(
            f'{path}: {what} is damaged or not an hwnas_jax file ({type(e).__name__}: {e}); {fix}'
        ) from None


def clear_cache() -> None:
    """Forgets loaded tables (tests; files replaced in place within one timestamp tick)."""
    with _LOCK:
        _CACHE.clear()
