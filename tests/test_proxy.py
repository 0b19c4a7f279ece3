"""Tests of the proxy engine on tiny NAS-Bench-201 networks (one cell per stage, 4 channels)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hwnas_jax import config as config_lib
from hwnas_jax import proxy, rmi, spaces
from hwnas_jax.search import batch as batch_lib
from hwnas_jax.spaces import nb201_net

KW = dict(channels=4, cells_per_stage=1, num_classes=10)
SETTINGS = proxy.Settings(steps=3)
GENOMES = np.array(
    [
        [3, 3, 3, 3, 3, 3],
        [0, 0, 0, 2, 1, 4],
        [1, 2, 4, 0, 3, 1],
        [2, 0, 0, 0, 0, 3],
        [4, 4, 4, 4, 4, 4],
    ]
)


def tiny_space():
    c = config_lib.get_config()
    c.space.channels, c.space.cells_per_stage = KW['channels'], KW['cells_per_stage']
    return spaces.make(c)


def engine(batch, settings=SETTINGS, *, strategy='loop', population=4, **kwargs):
    """A scorer of tiny NB201 networks, `population` members per compiled call."""
    return proxy.make_scorer(
        tiny_space(), batch, settings, strategy=strategy, chunk_size=population, **kwargs
    )


def tiny_batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n, 16, 16, 3)).astype(np.float32)
    ref = [
        rng.normal(size=(n, 16, 16, 4)),
        rng.normal(size=(n, 8, 8, 8)),
        rng.normal(size=(n, 4, 4, 16)),
    ]
    return {
        'images': images,
        'labels': rng.integers(0, 10, n).astype(np.int32),
        'ref_features': [r.astype(np.float32) for r in ref],
    }


@pytest.fixture(scope='module')
def batch():
    return tiny_batch()


@pytest.fixture(scope='module')
def loop_engine(batch):
    return engine(batch, strategy='loop', population=4)


def test_loop_engine_compiles_once_and_pads(loop_engine):
    a = loop_engine.score(GENOMES[:3])
    b = loop_engine.score(GENOMES[:1])
    c = loop_engine.score(GENOMES)  # 5 members: two calls of 4, the second padded.
    assert loop_engine.trace_count == 1
    np.testing.assert_allclose(b['score'], a['score'][:1], rtol=1e-6)
    np.testing.assert_allclose(c['score'][:3], a['score'], rtol=1e-6)
    assert c['ckas'].shape == (5, 3) and np.isfinite(c['score']).all()
    np.testing.assert_allclose(c['score'], c['ckas'].sum(1), rtol=1e-5)


def test_workers_run_calls_side_by_side_with_the_same_scores(batch):
    import threading
    import time

    genomes = np.concatenate([GENOMES, GENOMES[::-1], GENOMES[:2]])  # 12: three calls of 4.
    one = engine(batch, population=4, workers=1)  # The loop_engine's program (4 per call).
    assert one.workers == 1
    want = one.score(genomes)
    many = engine(batch, population=4, workers=3)
    assert many.workers == 3
    many.score(genomes[:1])
    compiled, state = many._compiled, {'now': 0, 'most': 0}
    lock = threading.Lock()

    def counting(*args):  # Records how many calls overlap.
        with lock:
            state['now'] += 1
            state['most'] = max(state['most'], state['now'])
        time.sleep(0.05)
        try:
            return compiled(*args)
        finally:
            with lock:
                state['now'] -= 1

    many._compiled = counting
    rows = [(r.start, r.stop) for r, _ in many.score_chunks(genomes)]
    assert rows == [(0, 12)]  # The three calls that ran together, as one result.
    got = many.score(genomes)
    assert state['most'] == 3
    assert many.trace_count == 1 and many._key == one._key  # One program, traced once.
    for k in proxy.OUTPUTS:  # The same program on the same inputs: the same bits.
        np.testing.assert_array_equal(got[k], want[k])


def test_auto_workers():
    cpu = jax.devices('cpu')
    cores = len(os.sched_getaffinity(0))
    assert proxy.auto_workers('loop', cpu[:1]) == cores
    assert proxy.auto_workers('vmap', cpu[:1]) == 1
    assert proxy.auto_workers('loop', cpu[:2] * 2) == 1  # Several devices: one call spans them.


@pytest.mark.slow
def test_strategies_agree(batch, loop_engine):
    want = loop_engine.score(GENOMES[:3])
    vmap = engine(batch, strategy='vmap', population=3)
    got = vmap.score(GENOMES[:3])
    np.testing.assert_allclose(got['score'], want['score'], rtol=2e-4, atol=2e-4)
    exact = engine(batch, strategy='exact')
    got = exact.score(GENOMES[:1])
    np.testing.assert_allclose(got['score'], want['score'][:1], rtol=2e-4, atol=2e-4)


@pytest.mark.slow
def test_training_raises_similarity(batch):
    zero = engine(batch, proxy.Settings(steps=0), strategy='loop', population=2)
    trained = engine(batch, proxy.Settings(steps=20), strategy='loop', population=2)
    g = GENOMES[:2]
    assert (trained.score(g)['loss'] < zero.score(g)['loss']).all()


def test_score_matches_direct_computation(batch):
    """Zero steps: the score is the RMI score of the freshly initialised network."""
    eng = engine(batch, proxy.Settings(steps=0), strategy='loop', population=2)
    g = GENOMES[2]
    seed = proxy.member_seeds(g[None])[0]
    model = nb201_net.PopulationNetwork(**KW, conv_impl='xla_cpu')
    key = jax.random.fold_in(jax.random.key(0), seed)
    v = model.init(key, batch['images'][:2], jnp.asarray(g), train=False)
    (_, feats), _ = model.apply(
        v, batch['images'], jnp.asarray(g), train=True, mutable=['batch_stats']
    )
    want = rmi.rmi_score(batch['ref_features'], feats)
    np.testing.assert_allclose(eng.score(g[None])['score'], [want], rtol=1e-5)


def test_bad_inputs(batch, loop_engine):
    with pytest.raises(ValueError, match='strategy'):
        engine(batch, strategy='fast')
    with pytest.raises(ValueError, match='genomes of shape'):
        loop_engine.score(np.zeros((6,), int))
    with pytest.raises(ValueError, match='pool_size'):
        batch_lib.select_batch(np.zeros((4, 2)), np.zeros(4), np.zeros(4), 8)


def test_select_batch_takes_lowest_cross_entropy():
    ce = np.array([3.0, 0.1, 2.0, 0.5, 0.2])
    assert batch_lib.select_batch(np.zeros((5, 1)), np.zeros(5), ce, 3).tolist() == [1, 4, 3]


SHARDED = r"""
import json, sys
import numpy as np
import jax
sys.path.insert(0, sys.argv[1])
from tests.test_proxy import engine, tiny_batch, GENOMES
from hwnas_jax import proxy
assert jax.device_count() == 4, jax.devices()
out = {}
for strategy in ('loop', 'vmap'):
    eng = engine(tiny_batch(), strategy=strategy, population=5)
    assert eng.call_size == 8
    out[strategy] = eng.score(GENOMES)['score'].tolist()
print(json.dumps(out))
"""


@pytest.mark.slow
def test_population_axis_sharded_over_four_cpu_devices(loop_engine):
    env = dict(
        os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4', JAX_PLATFORMS='cpu'
    )
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    res = subprocess.run(
        [sys.executable, '-c', SHARDED, repo],
        env=env,
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=1800,  # About a minute idle; 600 s was not enough on a loaded 2-core machine.
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    want = loop_engine.score(GENOMES)['score']
    np.testing.assert_allclose(out['loop'], want, rtol=1e-5)
    np.testing.assert_allclose(out['vmap'], want, rtol=2e-4, atol=2e-4)
