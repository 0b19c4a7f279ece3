"""The HW-EvRSNAS generation loop (paper Algorithm 1): score, penalise, evolve, checkpoint.

Each generation: every member is mapped to its `canonical` genome; classes not seen before are
trained on the one batch and scored by the proxy (a revisited architecture is never trained
again); fitness = score + penalty; the GA builds the next generation. The answer is the
best-fitness member of the last generation, as in the paper; the best feasible architecture seen
in the whole search is kept too.

Work directory: `config.json` and `command.txt` (by launch.py), `batch.npz` (the one training
batch, with the fingerprint of the settings that made it), `scores.jsonl` (one line per trained
architecture, written the moment it is scored), `state.json` (the GA's state, written atomically
after each generation), `metrics.jsonl` (one line per generation), `best.json` and, with
matplotlib, `search.png`. Rerunning on the same work directory resumes: a run killed at any
moment ends with exactly the result of an uninterrupted run with the same seed, because the GA's
generator state is saved with the population and each architecture's initial weights derive from
the proxy seed and the architecture alone.

Several processes (:mod:`hwnas_jax.distributed`): every process runs this loop on the same
state, journal and batch (the primary's, read from a work directory that all processes see, as
checkpoints are in the Flax examples) and scores each call's members together, receiving every
score, so the host-side GA takes the same path everywhere; only the primary process (index 0)
writes files and reads and writes the score store, whose hits it shares. Nothing a process
decides depends on time or on what it alone sees.
"""

from __future__ import annotations

import os
import socket
import time
import uuid

import numpy as np
from absl import logging

from hwnas_jax import distributed, fileio, spaces
from hwnas_jax.errors import UserError
from hwnas_jax.hardware import constraints as cons
from hwnas_jax.search import ga, report
from hwnas_jax.search import state as st
from hwnas_jax.search.objective import Objective
from hwnas_jax.search.progress import Progress

# Score-store claims (searches sharing a store at the same time): a claim not renewed for this
# long is taken to be a dead process's and may be taken over; renewed after every call.
CLAIM_LEASE_S = 1800.0
CLAIM_POLL_S = 5.0  # Seconds between looks at the store while waiting for another search.


def check(config, workdir: str) -> None:
    """Refuses, before anything is written, to resume a work directory of other settings."""
    st.load(workdir, config)


def proxy_seed(config) -> int:
    """The proxy's seed (batch draw, initial weights): `proxy.seed`, else the run's seed."""
    return int(config.seed if config.proxy.get('seed') is None else config.proxy.seed)


def score_layers(config) -> list[int] | None:
    """0-based matched layers whose CKAs the fitness sums (`proxy.score_layers`); None: all."""
    text = str(config.proxy.get('score_layers', '') or '').replace(' ', '')
    return [int(p) - 1 for p in text.split(',')] if text else None


def ranked_score(record: dict, layers: list[int] | None) -> float:
    """The score the fitness uses: phi (the paper), or the chosen layers' CKAs summed."""
    if layers is None:
        return float(record['score'])
    ckas = np.asarray(record['ckas'], np.float64)
    if max(layers) >= len(ckas):
        raise UserError(
            f'config.proxy.score_layers asks for layer {max(layers) + 1}, but the proxy '
            f'matches {len(ckas)} layers here; use numbers from 1 to {len(ckas)}'
        )
    return float(np.sum(ckas[layers]))


def _initial_population(config, space, objective, ga_cfg, rng) -> np.ndarray:
    if config.ga.init == 'rejection':
        population, draws = cons.rejection_sample(
            rng,
            space.random_genomes,
            objective.costs,
            objective.limits,
            ga_cfg.population,
            max_draws=config.ga.max_draws,
        )
        logging.info(
            'Rejection sampling: %d draws for %d feasible members', draws, ga_cfg.population
        )
        return population
    return ga.random_population(rng, np.asarray(space.cardinalities), ga_cfg.population)


def store_fingerprint(config, scorer, batch: dict, seed: int) -> str:
    """What a proxy score depends on: settings, networks, reference, batch and proxy seed."""
    from hwnas_jax.search import store

    p = config.proxy
    return store.fingerprint(
        {
            'space': config.space.name,
            'networks': scorer.describe_networks(),
            'settings': [p.steps, p.beta, p.learning_rate, p.momentum, p.weight_decay],
            'reference': config.reference.to_dict(),
            'batch': batch['digest'],
            'seed': seed,
            'strategy': scorer.strategy,
            'backend': scorer.devices[0].platform,
        }
    )


def _from_store(score_store, fp: str, journal: st.Journal, new: list, progress) -> list:
    """Copies the scores the store holds into the journal; returns the keys still to train.

    `fp` is empty without a store; the primary process reads the store (`score_store`, None on
    the others) and every process gets what it found.
    """
    if not fp or not new:
        return new
    found = score_store.get_many(fp, new) if score_store is not None else {}
    if distributed.process_count() > 1:
        pairs = distributed.broadcast_object([[list(k), r] for k, r in found.items()])
        found = {tuple(k): r for k, r in pairs}
    for k, rec in found.items():
        journal.add(k, rec, progress.generation)
    return [k for k in new if k not in found]


def _train(scorer, journal: st.Journal, new: list, progress: Progress, score_store, fp, owner):
    """Trains `new`, saving each score as soon as it is known (and renewing `owner`'s claims)."""
    genomes = np.asarray(new, np.int64)
    t0 = time.perf_counter()
    compile0 = scorer.compile_seconds
    for rows, result in scorer.score_chunks(genomes):
        scored = {}
        for j, i in enumerate(range(rows.start, rows.stop)):
            scored[new[i]] = {k: result[k][j] for k in ('score', 'loss', 'ckas')}
            journal.add(new[i], scored[new[i]], progress.generation)
            if not np.isfinite(result['score'][j]):
                logging.warning('Non-finite score for genome %s: fitness -inf', list(new[i]))
        if score_store is not None:
            score_store.put_many(fp, scored)
            if owner and rows.stop < len(new):
                score_store.claim(fp, new[rows.stop :], owner, lease_s=CLAIM_LEASE_S)
        now = time.perf_counter()
        compiled = scorer.compile_seconds - compile0
        progress.member_done(now - t0 - compiled, rows.stop - rows.start)
        t0, compile0 = now, scorer.compile_seconds


def _score_new(
    scorer,
    journal: st.Journal,
    new: list,
    progress: Progress,
    score_store=None,
    fp: str = '',
    owner: str = '',
) -> None:
    """Trains the architectures `new` (canonical genomes), saving each as soon as it is scored.

    With a store and an `owner` (a single-process search), it first claims in the store the
    architectures it trains, so that searches running at the same time on one store train
    each architecture once: it trains what it could claim, then takes from the store what
    other searches trained, waiting for those they are still training.
    """
    new = _from_store(score_store, fp, journal, new, progress)
    progress.start_generation(progress.generation, len(new))
    if not owner:
        if new:
            _train(scorer, journal, new, progress, score_store, fp, owner)
        return
    waited, last_line = 0.0, time.perf_counter()
    while new:
        mine = score_store.claim(fp, new, owner, lease_s=CLAIM_LEASE_S)
        if mine:
            try:
                _train(scorer, journal, mine, progress, score_store, fp, owner)
            finally:  # Ctrl-C: the others may train what this process did not.
                score_store.release(fp, [k for k in mine if k not in journal], owner)
        rest = [k for k in new if k not in journal]
        found = score_store.get_many(fp, rest) if rest else {}
        for k, rec in found.items():
            journal.add(k, rec, progress.generation)
        progress.done += len(found)
        new = [k for k in rest if k not in found]
        if new and not mine and not found:
            if time.perf_counter() - last_line >= progress.every or not waited:
                last_line = time.perf_counter()
                logging.info(
                    'gen %d/%d  waiting for %d architecture(s) that another search sharing the '
                    'score store %s is training (%.0f s so far)',
                    progress.generation + 1,
                    progress.generations,
                    len(new),
                    score_store.path,
                    waited,
                )
            time.sleep(CLAIM_POLL_S)
            waited += CLAIM_POLL_S


def run(config, workdir: str) -> dict:
    """Runs (or resumes) the search of `config` in `workdir`; returns the content of best.json."""
    # JAX is imported only when a search actually runs.
    from hwnas_jax import proxy
    from hwnas_jax.search import batch as batch_lib

    space = spaces.make(config)
    ga_cfg = ga.GAConfig.from_config(config.ga)
    objective = Objective(config, space)
    for msg in objective.budget_warnings():
        logging.warning('%s', msg)
    logging.info('Constraints: %s', objective.describe_constraints())
    os.makedirs(workdir, exist_ok=True)
    primary = distributed.is_primary()  # Writes the files; the other processes only read.

    state = st.load(workdir, config)
    seed = proxy_seed(config)
    batch = batch_lib.load_or_make_batch(config, os.path.join(workdir, 'batch.npz'), seed)
    if state is not None and state.batch_digest != batch['digest']:
        raise UserError(
            f'{os.path.join(workdir, "batch.npz")} differs from the batch this '
            'search trained on (the file was replaced); restore it or use a new '
            '--workdir'
        )
    scorer = proxy.from_config(config, space, batch, seed)
    journal = st.Journal(os.path.join(workdir, 'scores.jsonl'), write=primary)
    # Every process has read the same state and journal before the primary writes again.
    if not distributed.same_everywhere([-1 if state is None else state.generation, len(journal)]):
        raise UserError(
            f'the processes found different searches in {workdir}; put the work directory '
            'on a filesystem that every process sees'
        )
    score_store, fp, owner = None, '', ''
    if config.proxy.store:
        from hwnas_jax.search import store

        fp = store_fingerprint(config, scorer, batch, seed)
        if primary:
            score_store = store.ScoreStore(config.proxy.store)
            logging.info(
                'Score store %s: %d scores with these settings',
                config.proxy.store,
                score_store.count(fp),
            )
            if distributed.process_count() == 1:  # The processes of one search do not wait.
                owner = f'{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}'
    cards = np.asarray(space.cardinalities)

    if state is None:
        rng = np.random.default_rng(config.seed)
        population = _initial_population(config, space, objective, ga_cfg, rng)
        state = st.SearchState(
            fingerprint=st.fingerprint(config),
            generation=0,
            population=np.asarray(population, np.int64),
            rng=rng.bit_generator.state,
            batch_digest=batch['digest'],
        )
        if len(journal):  # Scores of a run killed before it saved its state: same settings?
            raise UserError(
                f'{journal.path} holds scores of a run whose settings are unknown '
                '(it has no state.json); delete the file, or use a new --workdir'
            )
        if primary:  # From now on a resume is checked against these settings.
            st.save(workdir, state)
    else:
        logging.info(
            'Resuming %s at generation %d/%d (%d architectures already scored)',
            workdir,
            state.generation + 1,
            ga_cfg.generations,
            len(journal),
        )
        rng = np.random.default_rng()
        rng.bit_generator.state = state.rng

    progress = Progress(
        ga_cfg.generations,
        ga_cfg.population,
        history_seconds=[r['seconds'] for r in state.history],
        history_new=[r['evaluations'] for r in state.history],
    )
    scorer.heartbeat = progress.heartbeat
    progress.at_once = getattr(scorer, 'workers', 1) * getattr(scorer, 'call_size', 1)
    layers = score_layers(config)
    while state.generation < ga_cfg.generations:
        g = state.generation
        progress.generation = g
        t0 = time.perf_counter()
        compile0 = scorer.compile_seconds
        population = state.population
        keys = [tuple(int(v) for v in space.canonical(x)) for x in population]
        _score_new(
            scorer,
            journal,
            [k for k in dict.fromkeys(keys) if k not in journal],
            progress,
            score_store,
            fp,
            owner,
        )
        # New to the search in this generation (the same counts after a resume).
        new = [k for k in dict.fromkeys(keys) if journal[k]['generation'] == g]
        scores = np.asarray([ranked_score(journal[k], layers) for k in keys])
        penalty, costs = objective.penalties(population)
        fitness = cons.fitness(scores, penalty)
        b = int(ga.best(population, fitness))
        feasible = penalty == 0
        for i in np.flatnonzero(feasible & np.isfinite(scores)):
            bf = state.best_feasible
            if bf is None or scores[i] > bf['score']:
                state.best_feasible = {
                    'genome': population[i].tolist(),
                    'score': float(scores[i]),
                    'generation': g,
                }
        compile_s = scorer.compile_seconds - compile0
        finite = np.isfinite(scores)
        rec = {
            'generation': g,
            'best_fitness': float(fitness[b]),
            'best_score': float(scores[b]),
            'best_cost': float(costs[0, b]),
            'best_genome': population[b].tolist(),
            'mean_score': float(np.mean(scores[finite])) if finite.any() else None,
            'mean_fitness': float(np.mean(fitness[np.isfinite(fitness)]))
            if np.isfinite(fitness).any()
            else None,
            'feasible_fraction': float(np.mean(feasible)),
            'evaluations': len(new),
            'cache_hits': len(keys) - len(new),
            'distinct_evaluated': journal.met_by(g),
            'seconds': time.perf_counter() - t0 - compile_s,
            'compile_seconds': compile_s,
            'best_feasible_score': (state.best_feasible or {}).get('score'),
            # NAS-Bench-201's accuracy of the generation's best: never read by the search.
            'evaluation': report.generation_evaluation(objective, population[b]),
        }
        if g + 1 < ga_cfg.generations:
            population = ga.next_generation(rng, population, fitness, cards, ga_cfg)
        state.generation = g + 1
        state.population = np.asarray(population, np.int64)
        state.rng = rng.bit_generator.state
        state.last_fitness = fitness.tolist()
        state.history.append(rec)
        if primary:
            st.save(workdir, state)
            fileio.atomic_write_text(
                os.path.join(workdir, 'metrics.jsonl'),
                ''.join(fileio.dumps(r) + '\n' for r in state.history),
            )
        logging.info('%s', progress.generation_line(rec))

    best = report.best_record(config, space, objective, state, journal)
    best['within_noise'] = report.within_noise(
        objective,
        {k: ranked_score(journal[k], layers) for k in journal.records},
        best['ground_truth'],
        report.noise_margin(layers),
    )
    if primary:
        fileio.atomic_write_json(os.path.join(workdir, 'best.json'), best, indent=2)
        report.plot(workdir, config, objective, state, journal)
    report.log_summary(best)
    return fileio.json_safe(best)
