"""End-to-end: the search command on a tiny config, outputs, resume after kill -9 and Ctrl-C."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def launch(workdir, *extra, config='configs/smoke.py', wait=True, cache=None, cwd=REPO, pipe=False):
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    if cache:
        # Compiled programs are shared between the test's runs through JAX's persistent cache.
        env.update(
            JAX_COMPILATION_CACHE_DIR=str(cache),
            HWNAS_JAX_CACHE=str(cache),
            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
        )
    cmd = [
        sys.executable,
        str(REPO / 'launch.py'),
        f'--config={config}',
        *([f'--workdir={workdir}'] if workdir else []),
        *extra,
    ]
    if not wait:
        return subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE if pipe else subprocess.DEVNULL,
            text=True,
        )
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp('jax_cache')


@pytest.fixture(scope='module')
def full_run(tmp_path_factory, cache):
    workdir = tmp_path_factory.mktemp('run') / 'w'
    res = launch(workdir, cache=cache)
    assert res.returncode == 0, res.stderr[-4000:]
    return workdir, res


def test_outputs(full_run):
    workdir, res = full_run
    for name in (
        'config.json',
        'command.txt',
        'batch.npz',
        'state.json',
        'metrics.jsonl',
        'scores.jsonl',
        'best.json',
    ):
        assert (workdir / name).exists(), name
    lines = [json.loads(x) for x in (workdir / 'metrics.jsonl').read_text().splitlines()]
    assert [r['generation'] for r in lines] == list(range(6))
    assert sum(r['evaluations'] for r in lines) == lines[-1]['distinct_evaluated']
    scored = (workdir / 'scores.jsonl').read_text().splitlines()
    assert len(scored) == lines[-1]['distinct_evaluated']
    best = json.loads((workdir / 'best.json').read_text())
    assert best['genome'] == lines[-1]['best_genome']
    assert best['fitness'] == pytest.approx(lines[-1]['best_fitness'])
    assert 0 <= best['score'] <= 3
    assert 'latency@pixel3' in best['costs'] and 'flops' in best['costs']
    assert best['cost_units']['latency@pixel3'] == 'ms'
    assert best['cost_units']['flops'] == 'MFLOPs'
    for key, value in best['costs'].items():
        if value is None:
            assert key in best['missing_costs']  # Every null says why.
    assert 0 <= best['index'] < 15625 and best['arch_str'].startswith('|')
    assert 'gen 6/6' in res.stderr
    assert 'Compiling' in res.stderr  # Said before the compile, not after.
    # The feasible architectures within the proxy's noise of the best, counted independently.
    from hwnas_jax.hardware import costs as hw_costs
    from hwnas_jax.spaces import nb201, nb201_truth

    config = json.loads((workdir / 'config.json').read_text())
    rows = [json.loads(x) for x in scored]
    genomes = np.asarray([r['genome'] for r in rows])
    latency = hw_costs.cost(genomes, 'latency', device='pixel3', missing='infeasible')
    scores = np.asarray([r['score'] for r in rows])
    ok = latency <= config['hardware']['limit']
    near = ok & (scores >= scores[ok].max() - 0.02)
    got = best['within_noise']
    assert (got['margin'], got['count']) == (0.02, int(near.sum())) and got['count'] >= 1
    acc = nb201_truth.accuracy(genomes[near])
    found = [i for i, g in enumerate(genomes[near]) if tuple(g) == nb201.canonical(best['genome'])]
    acc[found] = best['ground_truth']['found']['test_accuracy']  # The answer's own accuracy.
    assert got['test_accuracy']['min'] == acc.min() and got['test_accuracy']['max'] == acc.max()
    assert 'Within the proxy noise of the best score' in res.stderr


@pytest.mark.slow
def test_kill_mid_generation_and_resume_gives_the_same_result(full_run, tmp_path, cache):
    want_dir, _ = full_run
    workdir = tmp_path / 'w'
    proc = launch(workdir, wait=False, cache=cache)
    scores = workdir / 'scores.jsonl'
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if scores.exists() and len(scores.read_text().splitlines()) >= 4:
            break
        time.sleep(0.01)
    assert proc.poll() is None, 'the run ended before it could be interrupted'
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(scores.read_text().splitlines())
    res = launch(workdir, cache=cache)
    assert res.returncode == 0, res.stderr[-4000:]
    assert 'Resuming' in res.stderr
    got = json.loads((workdir / 'best.json').read_text())
    want = json.loads((want_dir / 'best.json').read_text())
    assert got == want
    # Nothing scored before the kill was trained again.
    total = json.loads((want_dir / 'metrics.jsonl').read_text().splitlines()[-1])
    assert len(scores.read_text().splitlines()) == total['distinct_evaluated'] >= done
    strip = ('seconds', 'compile_seconds')
    a = [
        {k: v for k, v in json.loads(x).items() if k not in strip}
        for x in (workdir / 'metrics.jsonl').read_text().splitlines()
    ]
    b = [
        {k: v for k, v in json.loads(x).items() if k not in strip}
        for x in (want_dir / 'metrics.jsonl').read_text().splitlines()
    ]
    assert a == b


@pytest.mark.slow
def test_ctrl_c_is_prompt_during_compile_and_training_and_resumes(tmp_path):
    """SIGINT while compiling, then while training long members: exit 130 in seconds."""
    workdir = tmp_path / 'w'
    slow = ('--config.proxy.steps=3000',)  # Each member trains for many seconds.
    for phase in ('Compiling', ' trained '):  # ' trained 2/5' with two calls at once.
        proc = launch(workdir, *slow, wait=False, cache=tmp_path / 'cache', pipe=True)
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if phase in line:
                break
        assert proc.poll() is None, ''.join(seen)[-3000:]
        time.sleep(1.0)
        t0 = time.time()
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        proc.stderr.close()
        proc.wait(timeout=60)
        assert time.time() - t0 < 15
        assert proc.returncode == 130, rest[-3000:]
        assert 'resume with: python' in rest and f'--workdir={workdir}' in rest
    scored = (workdir / 'scores.jsonl').read_text().splitlines()
    assert len(scored) >= 1  # The member trained before Ctrl-C is kept...
    res = launch(workdir, *slow, '--config.ga.generations=1', cache=tmp_path / 'cache')
    assert res.returncode == 2 and 'other settings (ga.generations)' in res.stderr
    assert 'Resuming' not in res.stderr


def test_resume_with_other_settings_is_refused_and_config_kept(full_run):
    workdir, _ = full_run
    before = (workdir / 'config.json').read_text()
    res = launch(workdir, '--config.seed=5')
    assert res.returncode == 2 and 'other settings (seed)' in res.stderr
    assert 'Traceback' not in res.stderr
    assert (workdir / 'config.json').read_text() == before  # Describes the run that happened.


@pytest.mark.slow
def test_stale_batch_of_other_settings_is_rebuilt(tmp_path, cache):
    """A run killed before its first state leaves batch.npz; other settings must not reuse it."""
    workdir = tmp_path / 'w'
    res = launch(workdir, '--config.ga.generations=1', cache=cache)
    assert res.returncode == 0, res.stderr[-3000:]
    for name in ('state.json', 'scores.jsonl'):  # As if killed right after the batch.
        os.remove(workdir / name)
    res = launch(
        workdir,
        '--config.ga.generations=1',
        '--config.seed=5',
        '--config.proxy.batch_size=12',
        cache=cache,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert 'made with other settings' in res.stderr
    import numpy as np

    with np.load(workdir / 'batch.npz') as f:
        assert f['images'].shape[0] == 12
        assert '"seed": 5' in str(f['fingerprint'])


@pytest.mark.slow
def test_second_run_on_a_busy_workdir_refuses_and_first_finishes(tmp_path, cache):
    workdir = tmp_path / 'w'
    first = launch(workdir, '--config.proxy.steps=200', wait=False, cache=cache, pipe=True)
    deadline = time.time() + 300
    while not (workdir / '.lock').exists() or not (workdir / '.lock').read_text():
        assert time.time() < deadline and first.poll() is None
        time.sleep(0.05)
    second = launch(workdir, '--config.proxy.steps=200', cache=cache)
    assert second.returncode == 2
    assert 'in use by another run' in second.stderr and f'pid {first.pid}' in second.stderr
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    assert (workdir / 'best.json').exists()


def tiny_config():
    sys.path.insert(0, str(REPO))
    from configs import smoke

    return smoke.get_config()


def test_interrupt_inside_scoring_then_resume(full_run, tmp_path, monkeypatch):
    """Deterministic mid-generation interruption: dies training the 3rd generation's first."""
    from hwnas_jax.proxy import scorers
    from hwnas_jax.search import loop

    want_dir, _ = full_run
    history = [json.loads(x) for x in (want_dir / 'metrics.jsonl').read_text().splitlines()]
    before = history[0]['evaluations'] + history[1]['evaluations']
    assert history[2]['evaluations'] > 0
    calls = []
    real = scorers.Scorer.score_chunks

    def dying(self, genomes):
        for rows, out in real(self, genomes):  # Calls run together come as one result.
            if sum(calls) >= before:  # Generations 0 and 1 are saved: stop in the 3rd.
                raise KeyboardInterrupt
            calls.append(rows.stop - rows.start)
            yield rows, out

    monkeypatch.setattr(scorers.Scorer, 'score_chunks', dying)
    workdir = str(tmp_path / 'w')
    with pytest.raises(KeyboardInterrupt):
        loop.run(tiny_config(), workdir)
    state = json.loads((tmp_path / 'w' / 'state.json').read_text())
    assert state['generation'] == 2
    assert len((tmp_path / 'w' / 'scores.jsonl').read_text().splitlines()) == before
    monkeypatch.setattr(scorers.Scorer, 'score_chunks', real)
    got = loop.run(tiny_config(), workdir)
    assert got == json.loads((want_dir / 'best.json').read_text())


def test_score_store_shared_by_two_searches(full_run, tmp_path, cache):
    """A second search with the same proxy settings trains nothing: the store has every score."""
    want_dir, _ = full_run
    store = tmp_path / 'scores.sqlite'
    a = launch(tmp_path / 'a', f'--config.proxy.store={store}', cache=cache)
    assert a.returncode == 0, a.stderr[-3000:]
    b = launch(tmp_path / 'b', f'--config.proxy.store={store}', cache=cache)
    assert b.returncode == 0, b.stderr[-3000:]
    assert 'Compiling' not in b.stderr  # Nothing to train, nothing to compile.
    want = json.loads((want_dir / 'best.json').read_text())
    for w in ('a', 'b'):
        assert json.loads((tmp_path / w / 'best.json').read_text()) == want


def test_score_layers_rank_by_the_chosen_layers_only(tmp_path):
    from hwnas_jax.errors import UserError
    from hwnas_jax.search import loop, report

    assert report.noise_margin(None) == report.noise_margin([5]) == report.NOISE == 0.02
    assert report.noise_margin([0, 1, 2]) == 0.0217

    c = tiny_config()
    c.proxy.score_layers = '2'
    best = loop.run(c, str(tmp_path / 'w'))
    records = [json.loads(x) for x in (tmp_path / 'w' / 'scores.jsonl').read_text().splitlines()]
    second = {round(r['ckas'][1], 6) for r in records}
    assert round(best['score'], 6) in second and best['score'] <= 1.0
    assert best['score_is'].startswith('the CKA of matched layer(s) 2')
    # Within the noise of one layer's CKA (smaller than phi's), among the records' layer 2.
    near = best['within_noise']
    assert near['margin'] == report.noise_margin([1]) == 0.0059 and near['count'] >= 1
    assert near['best_score'] == max(r['ckas'][1] for r in records)  # Its cell is feasible.
    c.proxy.score_layers = '4'
    with pytest.raises(UserError, match='score_layers asks for layer 4'):
        loop.run(c, str(tmp_path / 'w4'))


class _FakeScorer:
    """Scores genome g as sum(g), one member per call, `pause` seconds each; records calls."""

    def __init__(self, pause=0.0, started=None, die_after=None):
        self.compile_seconds = 0.0
        self.trained, self.pause, self.started, self.die_after = [], pause, started, die_after

    def score_chunks(self, genomes):
        for i, g in enumerate(genomes.tolist()):
            if self.started is not None:
                self.started.set()
            if self.die_after is not None and len(self.trained) == self.die_after:
                raise KeyboardInterrupt
            time.sleep(self.pause)
            self.trained.append(tuple(g))
            yield (
                slice(i, i + 1),
                {
                    'score': np.asarray([float(sum(g))]),
                    'loss': np.asarray([0.0]),
                    'ckas': np.asarray([[0.5]]),
                },
            )


def test_concurrent_searches_on_one_store_train_each_architecture_once(tmp_path, monkeypatch):
    """Two searches share a store at once: the second trains only what the first did not claim,
    waits for the rest and gets the first's scores; Ctrl-C gives back unfinished claims."""
    import threading

    from hwnas_jax.search import loop
    from hwnas_jax.search import state as st
    from hwnas_jax.search.progress import Progress
    from hwnas_jax.search.store import ScoreStore

    monkeypatch.setattr(loop, 'CLAIM_POLL_S', 0.05)
    path = tmp_path / 's.sqlite'
    started = threading.Event()
    first = _FakeScorer(pause=0.3, started=started)
    keys_a = [(1, 0), (2, 0), (3, 0), (4, 0)]
    keys_b = [(3, 0), (4, 0), (5, 0), (6, 0)]
    journals = {}

    def search(name, scorer, keys):
        journals[name] = st.Journal(str(tmp_path / f'{name}.jsonl'))
        loop._score_new(scorer, journals[name], keys, Progress(1, 4), ScoreStore(path), 'fp', name)

    loop.distributed.process_count()  # Imports JAX (seconds on a busy machine) before timing.
    a = threading.Thread(target=search, args=('a', first, keys_a))
    a.start()
    assert started.wait(60)  # A has claimed all of its keys and trains the first.
    second = _FakeScorer()
    search('b', second, keys_b)
    a.join(60)
    assert first.trained == keys_a
    assert second.trained == [(5, 0), (6, 0)]
    for name, keys in (('a', keys_a), ('b', keys_b)):
        assert {k: journals[name][k]['score'] for k in keys} == {k: sum(k) for k in keys}

    dying = _FakeScorer(die_after=1)
    with pytest.raises(KeyboardInterrupt):
        search('c', dying, [(7, 0), (8, 0), (9, 0)])
    assert dying.trained == [(7, 0)]
    d = ScoreStore(path)
    assert d.claim('fp', [(8, 0), (9, 0)], 'd', lease_s=3600) == [(8, 0), (9, 0)]
