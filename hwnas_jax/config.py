"""The base config (every field of every job, one comment each) and its one validation.

`configs/*.py` start from :func:`get_config` and change a few fields; `launch.py` calls
:func:`validate` once, before anything runs, so that a nonsensical setting is one clear error
naming the field and its allowed range instead of a traceback (or NaN scores) later.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ml_collections import config_dict

from hwnas_jax.errors import UserError

JOBS = ('search', 'train_reference', 'train_arch', 'figure5', 'figure2', 'proxy_study')
DATA_SOURCES = ('embedded', 'folder', 'tfds')
STRATEGIES = ('auto', 'vmap', 'loop', 'exact')
CONV_IMPLS = ('auto', 'xla', 'im2col', 'xla_cpu')
BN_MODES = ('eval', 'train')
GA_INITS = ('random', 'rejection')


def get_config() -> config_dict.ConfigDict:
    """Returns the base config (HW-EvRSNAS on NAS-Bench-201, Pixel 3 latency)."""
    c = config_dict.ConfigDict()
    c.job = 'search'  # 'search' | 'train_reference' | 'train_arch' | 'figure5'.
    c.seed = 0  # Fixes the whole run: GA, weight inits, batch choice.

    c.space = config_dict.ConfigDict()
    c.space.name = 'nb201'  # 'nb201' | 'ofa'.
    c.space.channels = 16  # NB201: channels of the first stage (16 in NAS-Bench-201).
    c.space.cells_per_stage = 5  # NB201: cells per stage (5 in NAS-Bench-201).
    c.space.width_mult = 1.2  # OFA: width multiplier, 1.0 or 1.2.
    c.space.resolution = 32  # OFA: input resolution of the network.
    c.space.feature_stages = '1,3,5'  # OFA: stages whose outputs are the RMI features.
    c.space.genome = config_dict.placeholder(str)  # train_arch: the genome to train, as text.

    c.data = config_dict.ConfigDict()
    c.data.source = 'embedded'  # 'embedded' (packaged sample) | 'folder' | 'tfds'.
    c.data.name = 'cifar10'  # tfds dataset name ('cifar10' | 'cifar100').
    c.data.root = config_dict.placeholder(str)  # 'folder': root holding split/label/image.
    c.data.num_classes = 10  # Classes of the task.
    c.data.image_size = 32  # Side of the (square) input images.
    c.data.resize = False  # Resize images of another stored size to image_size (bilinear).

    c.reference = config_dict.ConfigDict()
    c.reference.checkpoint = config_dict.placeholder(str)  # Trained reference; unset: packaged.
    c.reference.arch = ''  # 'resnet20' | 'ofa_max'; empty: the space's own reference.
    c.reference.depth = 20  # train_reference: ResNet depth (6n + 2).
    c.reference.bn_mode = 'eval'  # 'eval' (running stats) | 'train' (batch stats, as RMI-NAS).

    c.proxy = config_dict.ConfigDict()
    c.proxy.seed = config_dict.placeholder(int)  # Batch draw and initial weights; unset: seed.
    c.proxy.steps = 100  # N_train: SGD steps on the one batch.
    c.proxy.beta = 0.8  # Weight of the RMI loss against cross-entropy.
    c.proxy.learning_rate = 0.1  # Constant SGD learning rate (RMI-NAS).
    c.proxy.momentum = 0.9  # SGD momentum.
    c.proxy.weight_decay = 5e-4  # L2 weight decay.
    c.proxy.batch_size = 32  # Images in the one training batch.
    c.proxy.pool_size = 512  # Random images from which the lowest-CE batch is chosen.
    c.proxy.strategy = 'auto'  # 'auto' | 'vmap' (shared shapes) | 'loop' | 'exact'.
    c.proxy.chunk_size = 0  # Members per compiled call; 0: auto (1 on CPU, population else).
    c.proxy.workers = 0  # Calls at once, same scores; 0: one per core for CPU 'loop', else 1.
    c.proxy.conv_impl = 'auto'  # NB201 convolutions: 'auto' (xla_cpu on CPU) | 'xla' | ...
    # NB201 loop/vmap: stage cells as one scan (same scores; 1.6x faster compile, 14-38 % slower).
    c.proxy.scan_cells = False
    # Matched layers (1-based, e.g. '2' or '2,3') whose CKAs the fitness sums; '': all (phi,
    # the paper). Training is unchanged; scores.jsonl keeps phi and every layer's CKA.
    c.proxy.score_layers = ''
    c.proxy.store = config_dict.placeholder(str)  # SQLite score store shared by searches.

    c.hardware = config_dict.ConfigDict()
    c.hardware.metric = 'latency'  # 'latency' | 'energy' | 'flops' | 'params' | ...
    c.hardware.device = 'pixel3'  # edgegpu | raspi4 | edgetpu | pixel3 | eyeriss | fpga.
    c.hardware.limit = 10.0  # Omega, in the metric's unit (ms, mJ, MFLOPs, M params).
    c.hardware.dataset = 'cifar10'  # Table to read: cifar10 | cifar100 | ImageNet16-120.
    c.hardware.missing = 'error'  # Values the table lacks: 'error' | 'infeasible' | 'predict'.
    c.hardware.table = config_dict.placeholder(str)  # A converted full table; unset: packaged.
    c.hardware.extra = ''  # More constraints, e.g. 'flops<=100;latency@raspi4<=20'.

    c.ga = config_dict.ConfigDict()
    c.ga.population = 20  # N_pop.
    c.ga.generations = 100  # N_gen: populations scored (the answer is the best of the last).
    c.ga.tournament = 5  # Tournament size (drawn without replacement).
    c.ga.elites = 1  # Best members copied unchanged.
    c.ga.crossover = 0.5  # Uniform crossover: probability of a gene from the first parent.
    c.ga.mutation = 0.1  # Per-gene mutation probability (uniform resample).
    c.ga.init = 'random'  # 'random' | 'rejection' (feasible only, OFA's way).
    c.ga.max_draws = 100_000  # Rejection sampling gives up after this many draws.

    c.train = config_dict.ConfigDict()
    c.train.epochs = 200  # Epochs over the training split.
    c.train.batch_size = 128  # Images per step.
    c.train.learning_rate = 0.1  # Peak SGD learning rate (cosine schedule to 0).
    c.train.momentum = 0.9  # SGD momentum (Nesterov off).
    c.train.weight_decay = 1e-4  # L2 weight decay.
    c.train.max_steps = 0  # Stop after this many steps if > 0 (for smoke runs).
    c.train.eval_size = 0  # Test images evaluated (evenly spaced); 0: the whole split.
    c.train.eval_every = 1  # Evaluate on the test split every this many epochs.
    c.train.checkpoint_every = 1  # Save a checkpoint every this many epochs.

    c.figure5 = config_dict.ConfigDict()
    c.figure5.population = 50  # Population to fill in each trial.
    c.figure5.seeds = 10  # Trials averaged per budget.
    c.figure5.limits = ''  # Budgets, comma separated; empty: a default sweep for the space.

    # -- figure2 and proxy_study (NAS-Bench-201 experiments) ----------------------------------
    c.figure2 = config_dict.ConfigDict()
    c.figure2.devices = 'edgegpu,raspi4,edgetpu,pixel3,eyeriss,fpga,flops'  # 'flops': MFLOPs.
    c.figure2.budgets = ''  # '': derived per device; '3,5,8' (all) or 'pixel3:3,5;flops:50'.
    c.figure2.num_budgets = 5  # Derived budgets: quantiles 0.1..0.9 of the device's costs.
    c.figure2.seeds = 10  # GA seeds per (device, budget): seed, seed + 1, ...
    c.figure2.shard = '0/1'  # 'i/n': this process runs searches i, i+n, i+2n, ... of the grid.
    c.figure2.merge_only = False  # Run no search: only merge the finished ones.
    c.figure2.root = ''  # Folder of the grid's searches and merged outputs; '': the workdir.
    c.figure2.store = ''  # Score store: '' <root>/scores.sqlite (or proxy.store), 'none', path.

    c.study = config_dict.ConfigDict()
    c.study.num_archs = 100  # Architectures scored (uniform over canonical classes).
    c.study.connected_only = True  # Leave out cells with no input-output path (all 10 %).
    c.study.rmi = True  # Train with the RMI proxy; False: only FLOPs, params, NASWOT, synflow.
    c.study.steps_k = '0,10,25,50'  # phi and loss after k of proxy.steps steps (same run).
    c.study.heldout_size = 32  # Test-split images for phi off the training batch; 0: off.
    c.study.bn_pass = True  # Train again against the reference in the other bn_mode.
    c.study.zero_cost = True  # Training-free baselines NASWOT and synflow.
    c.study.naswot_batch = 128  # Images in NASWOT's batch (128 in Mellor et al.).
    c.study.noise_archs = 10  # The first rows scored again with proxy seed + 1 (noise).
    c.study.top_k = 10  # Top-k hit rate: share of the k most accurate in the k best ranked.
    c.study.bootstrap = 1000  # Bootstrap resamples of the architectures for 95 % intervals.
    return c


def _fail(field: str, value: Any, want: str) -> None:
    raise UserError(f'config.{field}={value!r} is invalid: {want} (set --config.{field}=...)')


def check_choice(c, field: str, choices) -> None:
    """UserError naming `field` unless its value is one of `choices`."""
    value = _get(c, field)
    if value not in choices:
        _fail(field, value, f'must be one of {", ".join(map(repr, choices))}')


def _get(c, field: str) -> Any:
    for part in field.split('.'):
        c = c[part]
    return c


def check_number(
    c,
    field: str,
    lo: float | None = None,
    hi: float | None = None,
    *,
    integer: bool = False,
    lo_open: bool = False,
    hi_open: bool = False,
) -> None:
    """UserError naming `field` unless it is a finite number (integer) in the range."""
    value = _get(c, field)
    kind = 'an integer' if integer else 'a finite number'
    bad_type = (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (integer and not float(value).is_integer())
    )
    if bad_type or not math.isfinite(float(value)):
        _fail(field, value, f'must be {kind}{_range(lo, hi, lo_open, hi_open)}')
    v = float(value)
    if (lo is not None and (v < lo or (lo_open and v == lo))) or (
        hi is not None and (v > hi or (hi_open and v == hi))
    ):
        _fail(field, value, f'must be {kind}{_range(lo, hi, lo_open, hi_open)}')


def _range(lo, hi, lo_open, hi_open) -> str:
    if lo is None and hi is None:
        return ''
    if hi is None:
        return f' {">" if lo_open else ">="} {lo:g}'
    if lo is None:
        return f' {"<" if hi_open else "<="} {hi:g}'
    return f' in {"(" if lo_open else "["}{lo:g}, {hi:g}{")" if hi_open else "]"}'


def feature_stages(config) -> tuple[int, ...]:
    """`config.space.feature_stages` ('1,3,5') as a tuple of stage numbers."""
    text = str(config.space.feature_stages)
    try:
        stages = tuple(int(s) for s in text.split(','))
    except ValueError:
        stages = ()
    if not stages or any(s < 1 or s > 5 for s in stages) or len(set(stages)) != len(stages):
        _fail('space.feature_stages', text, "must be distinct stage numbers 1..5, e.g. '1,3,5'")
    return stages


# Named search presets (a config variant, `configs/nb201_latency.py:layer2`): each beats the
# paper's settings on evidence measured on architectures it was not chosen on (README, "How
# good is it?"). 'paper' is the default everywhere.
PRESETS = {
    'paper': {},
    # Rank by the CKA of the second matched layer (the output of cell 2N) alone: proxy study,
    # 100 connected NAS-Bench-201 cells, Kendall tau 0.63 against phi's 0.51; chosen on half
    # A, on held-out half B 0.63 against 0.52, paired bootstrap difference [0.03, 0.22].
    'layer2': {'score_layers': '2'},
}


def search_preset(c, variant: str, config_name: str):
    """`c` with the proxy fields of preset `variant`; UserError naming the presets."""
    if variant not in PRESETS:
        raise UserError(
            f'unknown variant {variant!r} of {config_name}; choose one of {sorted(PRESETS)}'
        )
    for field, value in PRESETS[variant].items():
        c.proxy[field] = value
    return c


def fingerprint_differences(want: dict, got: dict) -> list[str]:
    """Names of the fingerprint fields (``section.field``) where `got` differs from `want`.

    A field that `got` lacks (a work directory written before the field existed) is no
    difference while `want` holds its default: adding a config field keeps old runs resumable.
    """
    defaults = json.loads(json.dumps(get_config().to_dict()))
    out = []
    for k in sorted(set(want) | set(got)):
        w, g = want.get(k), got.get(k)
        if isinstance(w, dict) and isinstance(g, dict):
            base = defaults.get(k, {}) if isinstance(defaults.get(k), dict) else {}
            out += [
                f'{k}.{f}'
                for f in sorted(set(w) | set(g))
                if w.get(f) != g.get(f) and not (f not in g and f in base and w[f] == base[f])
            ]
        elif w != g:
            out.append(k)
    return out


def validate(config) -> None:
    """Checks every field the config's job reads, once; the first bad one is a UserError.

    Raises:
      UserError: naming the field, its value and the allowed values or range.
    """
    from hwnas_jax.hardware import constraints as cons

    c = config
    check_choice(c, 'job', JOBS)
    check_number(c, 'seed', 0, 2**32 - 1, integer=True)
    from hwnas_jax import spaces

    check_choice(c, 'space.name', spaces.NAMES)
    space = spaces.space_class(c.space.name)
    space.validate_config(c)
    check_choice(c, 'data.source', DATA_SOURCES)
    if c.data.source == 'folder' and not c.data.root:
        _fail(
            'data.root',
            c.data.root,
            "data.source='folder' needs the folder holding train/<label>/<image> (and test/...)",
        )
    check_number(c, 'data.num_classes', 2, 100_000, integer=True)
    check_number(c, 'data.image_size', 8, 1024, integer=True)
    check_choice(c, 'reference.bn_mode', BN_MODES)
    if c.job in ('search', 'figure5', 'figure2', 'proxy_study'):
        _validate_search(c, space, cons)
    if c.job in ('train_reference', 'train_arch'):
        check_number(c, 'train.epochs', 1, None, integer=True)
        check_number(c, 'train.batch_size', 1, 1 << 16, integer=True)
        check_number(c, 'train.learning_rate', 0, 10, lo_open=True)
        check_number(c, 'train.momentum', 0, 1, hi_open=True)
        check_number(c, 'train.weight_decay', 0, 1, hi_open=True)
        check_number(c, 'train.max_steps', 0, None, integer=True)
        check_number(c, 'train.eval_size', 0, None, integer=True)
        check_number(c, 'train.eval_every', 1, None, integer=True)
        check_number(c, 'train.checkpoint_every', 1, None, integer=True)
    if c.job == 'train_reference' and c.reference.arch in ('', 'resnet20'):
        if (int(c.reference.depth) - 2) % 6 or c.reference.depth < 8:
            _fail('reference.depth', c.reference.depth, 'a ResNet depth 6n + 2 >= 8 (20, 32, 56)')
    if c.job == 'train_arch' and not c.space.genome:
        _fail(
            'space.genome',
            c.space.genome,
            "train_arch needs the architecture: a search's "
            "best.json, an NB201 arch string or genome ('3,3,4,1,3,1'), or an OFA config",
        )
    if c.job == 'figure5':
        check_number(c, 'figure5.population', 1, 100_000, integer=True)
        check_number(c, 'figure5.seeds', 1, 10_000, integer=True)
    if c.job in ('figure2', 'proxy_study'):
        _validate_experiments(c)


def _validate_experiments(c) -> None:
    """The figure2 and proxy_study fields (their owner keeps this function).

    Each search of a Figure 2 grid, and the proxy settings of a study, are checked as the
    search config they make (job 'search'), so the proxy and GA fields get the search's checks.
    """
    import copy

    if c.job == 'figure2':
        from hwnas_jax.search import figure2

        check_number(c, 'figure2.num_budgets', 1, 1000, integer=True)
        check_number(c, 'figure2.seeds', 1, 100_000, integer=True)
        if c.seed + c.figure2.seeds - 1 > 2**32 - 1:
            _fail('figure2.seeds', c.figure2.seeds, 'seed + seeds - 1 must be < 2**32')
        searches = figure2.grid(c)  # UserErrors name the field (devices, budgets, shard).
        seen = set()
        for s in searches:
            if s.device in seen:
                continue
            seen.add(s.device)
            validate(figure2.search_config(c, s, None))
            if s.device != 'flops' and c.hardware.missing == 'error':
                from hwnas_jax.hardware import costs

                known, total = costs.coverage(
                    'latency', device=s.device, dataset=c.hardware.dataset, table=c.hardware.table
                )
                if known < total:
                    _fail(
                        'hardware.missing',
                        'error',
                        f'HW-NAS-Bench has {s.device} latency '
                        f'for {known} of {total} cells: use infeasible or predict',
                    )
        return
    check_number(c, 'study.num_archs', 1, 15_625, integer=True)
    check_number(c, 'study.heldout_size', 0, 1 << 16, integer=True)
    if 0 < c.study.heldout_size < 2:
        _fail('study.heldout_size', c.study.heldout_size, 'CKA needs 2 images or more; 0: off')
    check_number(c, 'study.naswot_batch', 2, 1 << 16, integer=True)
    check_number(c, 'study.noise_archs', 0, 15_625, integer=True)
    check_number(c, 'study.top_k', 1, 15_625, integer=True)
    check_number(c, 'study.bootstrap', 0, 1_000_000, integer=True)
    if not (c.study.rmi or c.study.zero_cost):
        _fail('study.rmi', c.study.rmi, 'the study needs study.rmi or study.zero_cost')
    search = copy.deepcopy(c)
    search.job = 'search'
    validate(search)
    from hwnas_jax import study

    study.check_config(c)  # Its space (NAS-Bench-201) and study.steps_k.


def _validate_search(c, space, cons) -> None:
    p = c.proxy
    if c.job == 'search':
        if c.proxy.seed is not None:
            check_number(c, 'proxy.seed', 0, 2**32 - 1, integer=True)
        check_number(c, 'proxy.steps', 0, 100_000, integer=True)
        check_number(c, 'proxy.beta', 0, 1)
        check_number(c, 'proxy.learning_rate', 0, 10, lo_open=True)
        check_number(c, 'proxy.momentum', 0, 1, hi_open=True)
        check_number(c, 'proxy.weight_decay', 0, 1, hi_open=True)
        check_number(c, 'proxy.batch_size', 2, 1 << 16, integer=True)
        check_number(c, 'proxy.pool_size', 2, 1 << 20, integer=True)
        if p.batch_size > p.pool_size:
            _fail(
                'proxy.batch_size',
                p.batch_size,
                f'must be <= proxy.pool_size ({p.pool_size}):'
                ' the batch is the lowest-loss part of the pool',
            )
        check_choice(c, 'proxy.strategy', STRATEGIES)
        check_choice(c, 'proxy.conv_impl', CONV_IMPLS)
        check_choice(c, 'proxy.scan_cells', (False, True))
        layers = str(c.proxy.score_layers).replace(' ', '')
        if layers and not all(p.isdigit() and int(p) >= 1 for p in layers.split(',')):
            _fail(
                'proxy.score_layers',
                c.proxy.score_layers,
                "must be '' (all layers) or 1-based layer numbers such as '2' or '2,3'",
            )
        check_number(c, 'proxy.chunk_size', 0, 1 << 16, integer=True)
        check_number(c, 'proxy.workers', 0, 1024, integer=True)
        g = c.ga
        check_number(c, 'ga.population', 2, 100_000, integer=True)
        check_number(c, 'ga.generations', 1, 1_000_000, integer=True)
        check_number(c, 'ga.tournament', 1, g.population, integer=True)
        check_number(c, 'ga.elites', 0, g.population - 1, integer=True)
        check_number(c, 'ga.crossover', 0, 1)
        check_number(c, 'ga.mutation', 0, 1)
        check_choice(c, 'ga.init', GA_INITS)
        check_number(c, 'ga.max_draws', 1, None, integer=True)
    hw = c.hardware
    if c.job == 'figure5':
        return
    check_choice(c, 'hardware.metric', space.metrics)
    if hw.metric in space.device_metrics:
        from hwnas_jax.hardware import costs

        has = [d for d in costs.DEVICES if hw.metric in costs.DEVICE_HAS[d]]
        check_choice(c, 'hardware.device', has)
    check_number(c, 'hardware.limit', 0, None, lo_open=True)
    primary = f'{hw.metric}@{hw.device}' if hw.metric in space.device_metrics else hw.metric
    try:
        extra = cons.parse_constraints(hw.extra or '')
    except ValueError as e:
        raise UserError(f'config.hardware.extra={hw.extra!r} is invalid: {e}') from None
    for x in extra:
        if x.name == primary:
            _fail(
                'hardware.extra',
                hw.extra,
                f'constrains {primary} again (the primary '
                'constraint hardware.metric/device/limit already does): give it once',
            )
        if not math.isfinite(x.limit) or x.limit <= 0:
            _fail('hardware.extra', hw.extra, f'the limit of {x.name} must be a positive number')
