"""The HW-EvRSNAS generation loop (paper Algorithm 1): score, penalise, evolve, checkpoint.

Each generation: every member is mapped to its `canonical` genome; classes not seen before are
trained on the one batch and scored by the proxy (a revisited architecture is never trained
again); fitness = score + penalty; the GA builds the next generation. The answer is the
best-fitness member of the last generation, as in the paper; the best feasible architecture seen
in the whole search is kept too.

Work directory: `config.json` (by launch.py), `batch.npz` (the one training batch), `state.json`
(everything needed to resume, written atomically after each generation), `metrics.jsonl` (one
line per generation) and `best.json`. Rerunning on the same work directory resumes: a run killed
at any moment ends with exactly the result of an uninterrupted run with the same seed, because
the GA's generator state is saved with the population and each architecture's initial weights
derive from the seed and the architecture alone.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
from absl import logging

from hwnas_jax import spaces
from hwnas_jax.hardware import constraints as cons
from hwnas_jax.search import ga
from hwnas_jax.search.objective import Objective

STATE_VERSION = 1


def _atomic_write(path: str, text: str) -> None:
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _key(genome) -> str:
    return ','.join(str(int(v)) for v in genome)


def _fingerprint(config) -> dict:
    """Config fields a resumed run must share with the run that wrote the state."""
    return {'seed': config.seed, 'space': config.space.to_dict(), 'proxy': config.proxy.to_dict(),
            'ga': config.ga.to_dict(), 'hardware': config.hardware.to_dict(),
            'data': config.data.to_dict(), 'reference': config.reference.to_dict()}


def load_state(workdir: str, config) -> dict | None:
    """The saved search state of `workdir`, or None for a new search."""
    path = os.path.join(workdir, 'state.json')
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            state = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(
            f'{path} is unreadable ({e}); it is written atomically, so this file was changed '
            'by hand: delete it to start the search again') from None
    if state.get('version') != STATE_VERSION:
        raise ValueError(f'{path} was written by another version of hwnas_jax; use a new '
                         '--workdir')
    want = json.loads(json.dumps(_fingerprint(config)))
    diff = sorted(k for k in want if state['fingerprint'].get(k) != want[k])
    if diff:
        raise ValueError(
            f'{workdir} holds a search with different settings ({", ".join(diff)}); resume it '
            'with the same config, or use a new --workdir')
    return state


def _progress(rec: dict, n_gen: int, times: list[float]) -> str:
    eta = (np.mean(times[-10:]) * (n_gen - rec['generation'] - 1)) if times else 0.0
    return (f'gen {rec["generation"] + 1}/{n_gen}  best fitness {rec["best_fitness"]:.4f} '
            f'(score {rec["best_score"]:.4f}, cost {rec["best_cost"]:.4g})  '
            f'feasible {rec["feasible_fraction"]:.0%}  new {rec["evaluations"]} '
            f'hits {rec["cache_hits"]}  {rec["seconds"]:.1f}s/gen '
            f'(+{rec["compile_seconds"]:.1f}s compile)  ETA {eta / 60:.1f} min')


def _write_outputs(workdir: str, state: dict) -> None:
    _atomic_write(os.path.join(workdir, 'metrics.jsonl'),
                  ''.join(json.dumps(r) + '\n' for r in state['history']))


def _describe_kwargs(config, space) -> dict:
    kw = {'num_classes': config.data.num_classes}
    if space.NAME == 'ofa':
        kw.update(resolution=config.space.resolution, width_mult=config.space.width_mult)
    return kw


def _best_record(space, objective: Objective, genome, score: float, fitness: float,
                 describe_kwargs: dict) -> dict:
    rec = space.describe(genome, **describe_kwargs)
    rec.update(score=score, fitness=fitness, costs=objective.report(genome),
               constraints=objective.describe_constraints())
    return rec


def run(config, workdir: str) -> dict:
    """Runs (or resumes) the search of `config` in `workdir`; returns the content of best.json."""
    from hwnas_jax import proxy  # JAX is imported only when a search actually runs.

    space = spaces.get(config.space.name)
    ga_cfg = ga.GAConfig.from_config(config.ga)
    objective = Objective(config, space)
    for msg in objective.budget_warnings():
        logging.warning('%s', msg)
    logging.info('Constraints: %s', objective.describe_constraints())
    os.makedirs(workdir, exist_ok=True)

    state = load_state(workdir, config)
    batch = proxy.load_or_make_batch(config, os.path.join(workdir, 'batch.npz'))
    engine = proxy.make_engine(config, space, batch)
    cards = np.asarray(space.CARDINALITIES)

    if state is None:
        rng = np.random.default_rng(config.seed)
        if config.ga.init == 'rejection':
            population, draws = cons.rejection_sample(
                rng, space.random_genomes, objective.costs, objective.limits,
                ga_cfg.population, max_draws=config.ga.max_draws)
            logging.info('Rejection sampling: %d draws for %d feasible members', draws,
                         ga_cfg.population)
        elif config.ga.init == 'random':
            population = ga.random_population(rng, cards, ga_cfg.population)
        else:
            raise ValueError(f"config.ga.init must be 'random' or 'rejection', got "
                             f'{config.ga.init!r}')
        state = {'version': STATE_VERSION, 'fingerprint': _fingerprint(config), 'generation': 0,
                 'population': population.tolist(), 'rng': rng.bit_generator.state,
                 'cache': {}, 'history': [], 'best_feasible': None}
    else:
        logging.info('Resuming %s at generation %d/%d', workdir, state['generation'] + 1,
                     ga_cfg.generations)
        rng = np.random.default_rng()
        rng.bit_generator.state = state['rng']

    times = [r['seconds'] for r in state['history']]
    while state['generation'] < ga_cfg.generations:
        g = state['generation']
        t0 = time.perf_counter()
        compile0 = engine.compile_seconds
        population = np.asarray(state['population'], np.int64)
        canon = [space.canonical(x) for x in population]
        keys = [_key(c) for c in canon]
        new = list(dict.fromkeys(k for k in keys if k not in state['cache']))
        if new:
            genomes = np.asarray([[int(v) for v in k.split(',')] for k in new], np.int64)
            result = engine.score(genomes)
            for i, k in enumerate(new):
                state['cache'][k] = {'score': float(result['score'][i]),
                                     'loss': float(result['loss'][i]),
                                     'ckas': [float(v) for v in result['ckas'][i]]}
        scores = np.asarray([state['cache'][k]['score'] for k in keys])
        for k, s in zip(keys, scores):
            if not np.isfinite(s) and k in new:
                logging.warning('Non-finite score for genome %s: fitness -inf', k)
        penalty, costs = objective.penalties(population)
        fitness = cons.fitness(scores, penalty)
        b = int(ga.best(population, fitness))
        feasible = penalty == 0
        for i in np.flatnonzero(feasible & np.isfinite(scores)):
            bf = state['best_feasible']
            if bf is None or scores[i] > bf['score']:
                state['best_feasible'] = {'genome': population[i].tolist(),
                                          'score': float(scores[i]), 'generation': g}
        compile_s = engine.compile_seconds - compile0
        seconds = time.perf_counter() - t0 - compile_s
        rec = {'generation': g, 'best_fitness': float(fitness[b]), 'best_score': float(scores[b]),
               'best_cost': float(costs[0, b]), 'best_genome': population[b].tolist(),
               'mean_score': float(np.mean(scores[np.isfinite(scores)]))
               if np.isfinite(scores).any() else None,
               'feasible_fraction': float(np.mean(feasible)), 'evaluations': len(new),
               'cache_hits': len(keys) - len(new), 'distinct_evaluated': len(state['cache']),
               'seconds': seconds, 'compile_seconds': compile_s,
               'best_feasible_score': (state['best_feasible'] or {}).get('score')}
        if g + 1 < ga_cfg.generations:
            population = ga.next_generation(rng, population, fitness, cards, ga_cfg)
        state.update(generation=g + 1, population=np.asarray(population).tolist(),
                     rng=rng.bit_generator.state, last_fitness=fitness.tolist())
        state['history'].append(rec)
        times.append(seconds)
        _atomic_write(os.path.join(workdir, 'state.json'), json.dumps(state))
        _write_outputs(workdir, state)
        logging.info('%s', _progress(rec, ga_cfg.generations, times))

    last = state['history'][-1]
    kw = _describe_kwargs(config, space)
    best = _best_record(space, objective, last['best_genome'], last['best_score'],
                        last['best_fitness'], kw)
    bf = state['best_feasible']
    best['best_feasible_seen'] = None if bf is None else _best_record(
        space, objective, bf['genome'], bf['score'], bf['score'], kw)
    best['evaluations'] = len(state['cache'])
    _atomic_write(os.path.join(workdir, 'best.json'), json.dumps(best, indent=2))
    logging.info('Best of the last generation: %s', json.dumps(
        {k: best[k] for k in ('genome', 'score', 'fitness', 'costs') if k in best}))
    return best
