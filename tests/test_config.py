"""The one validation of the config: every nonsensical setting is a UserError naming its field."""

import pytest

from hwnas_jax import config as config_lib
from hwnas_jax.errors import UserError

BAD = [
    ('proxy.learning_rate', float('nan')),
    ('proxy.learning_rate', 1e30),
    ('proxy.learning_rate', 0.0),
    ('proxy.momentum', 1.5),
    ('proxy.momentum', -0.1),
    ('proxy.weight_decay', float('inf')),
    ('proxy.weight_decay', -1e-4),
    ('proxy.beta', 1.2),
    ('proxy.steps', -1),
    ('proxy.batch_size', 1),
    ('proxy.batch_size', 1024),  # > pool_size
    ('proxy.chunk_size', -2),
    ('proxy.workers', -1),
    ('proxy.strategy', 'fast'),
    ('proxy.conv_impl', 'cudnn'),
    ('proxy.score_layers', 'two'),
    ('proxy.score_layers', '0,2'),
    ('proxy.seed', -3),
    ('seed', -1),
    ('ga.generations', 0),
    ('ga.population', 1),
    ('ga.tournament', 0),
    ('ga.tournament', 50),
    ('ga.elites', 20),
    ('ga.mutation', 2.0),
    ('ga.crossover', -0.5),
    ('ga.init', 'greedy'),
    ('space.name', 'darts'),
    ('space.channels', 0),
    ('space.cells_per_stage', 0),
    ('data.source', 'internet'),
    ('data.num_classes', 1),
    ('hardware.metric', 'speed'),
    ('hardware.device', 'iphone'),
    ('hardware.limit', 0.0),
    ('hardware.limit', -5.0),
    ('hardware.limit', float('nan')),
    ('hardware.dataset', 'mnist'),
    ('hardware.missing', 'ignore'),
    ('hardware.extra', 'latency@pixel3<=4'),  # The primary constraint again.
    ('hardware.extra', 'flops<=100;flops<=50'),  # Twice.
    ('hardware.extra', 'flops<=-1'),
    ('hardware.extra', 'flops=>100'),
]


def _config():
    return config_lib.get_config()


@pytest.mark.parametrize('field,value', BAD, ids=[f'{f}={v}' for f, v in BAD])
def test_bad_setting_names_its_field(field, value):
    c = _config()
    *parents, name = field.split('.')
    node = c
    for p in parents:
        node = node[p]
    with node.unlocked() if hasattr(node, 'unlocked') else _nothing():
        node[name] = value
    with pytest.raises(UserError) as e:
        config_lib.validate(c)
    msg = str(e.value)
    assert field.split('.')[0] in msg and '\n' not in msg


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_defaults_and_shipped_configs_are_valid():
    config_lib.validate(_config())
    import importlib
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    for name, variants in [
        ('nb201_latency', [None]),
        ('nb201_flops', [None]),
        ('smoke', [None]),
        ('ofa_flops', ['240', '300', '374', 'cifar']),
        ('figure5', ['ofa', 'ofa_cifar', 'nb201']),
    ]:
        module = importlib.import_module(f'configs.{name}')
        for v in variants:
            config_lib.validate(module.get_config() if v is None else module.get_config(v))


def test_ofa_fields():
    c = _config()
    c.space.name = 'ofa'
    c.hardware.metric = 'flops'
    c.hardware.limit = 300.0
    config_lib.validate(c)
    c.space.feature_stages = '1,3,9'
    with pytest.raises(UserError, match='space.feature_stages'):
        config_lib.validate(c)
    c.space.feature_stages = '1,3,5'
    c.space.width_mult = 1.1
    with pytest.raises(UserError, match='space.width_mult'):
        config_lib.validate(c)


def test_a_field_added_since_a_run_keeps_it_resumable():
    # A work directory written before a config field existed lacks it in its fingerprint: no
    # difference while the field holds its default, a difference once it does not.
    from hwnas_jax.search import state

    c = config_lib.get_config()
    old = state.fingerprint(c)
    del old['proxy']['scan_cells']
    assert config_lib.fingerprint_differences(state.fingerprint(c), old) == []
    c.proxy.scan_cells = True
    assert config_lib.fingerprint_differences(state.fingerprint(c), old) == ['proxy.scan_cells']
    c.proxy.scan_cells = False
    c.proxy.steps = 7
    assert config_lib.fingerprint_differences(state.fingerprint(c), old) == ['proxy.steps']


def test_a_resume_may_change_what_does_not_change_scores():
    from hwnas_jax.search import state

    c = config_lib.get_config()
    old = state.fingerprint(c)
    c.proxy.workers, c.proxy.store = 3, 'scores.sqlite'
    assert config_lib.fingerprint_differences(state.fingerprint(c), old) == []
