"""What a search reports: best.json (with units and reasons), the final log line, a plot."""

from __future__ import annotations

import json
import os

import numpy as np
from absl import logging

from hwnas_jax import fileio
from hwnas_jax.search import state as st

# How far apart two scores must be to say one architecture beats another: the mean change
# of phi, and of each matched layer's CKA, when the proxy's seed changes (10 cells of the proxy
# study, full size: README, How good is it?). Float rounding alone moves phi by up to 0.01.
NOISE = 0.02
NOISE_PER_LAYER = (0.0085, 0.0059, 0.0073)


def noise_margin(layers: list[int] | None) -> float:
    """The margin of :func:`within_noise` for a score: phi (None), or the chosen layers' sum.

    Layers beyond the three measured (another space) get phi's margin.
    """
    if layers is None or max(layers) >= len(NOISE_PER_LAYER):
        return NOISE
    return round(sum(NOISE_PER_LAYER[k] for k in layers), 4)


def describe(config, space, objective, genome, score: float, fitness: float) -> dict:
    """JSON-able record of one architecture: encodings, score, fitness, every cost with units."""
    rec = space.describe(genome)
    costs = objective.report(genome)
    rec.update(
        score=score,
        fitness=fitness,
        costs=costs,
        cost_units={k: space.unit(k) for k in costs},
        constraints=objective.describe_constraints(),
    )
    missing = {
        k: (
            f'HW-NAS-Bench has no {k.split("@")[0]} on {k.split("@")[1]} for this '
            'architecture (not measured, or the measurement failed)'
        )
        for k, v in costs.items()
        if v is None and '@' in k
    }
    if missing:
        rec['missing_costs'] = missing
    return rec


def ground_truth(objective, genome) -> dict:
    """The space's benchmark accuracy of `genome` (evaluation only: the search never reads it)."""
    return objective.space.ground_truth(genome, objective)


def generation_evaluation(objective, genome) -> dict | None:
    """The compact ground truth of a generation's best for metrics.jsonl (evaluation only)."""
    gt = ground_truth(objective, genome)
    if not gt['applicable']:
        return None
    found = gt['found']
    return {
        'evaluation_only': True,
        'test_accuracy': found['test_accuracy'],
        'valid_accuracy': found['valid_accuracy'],
        'rank_feasible': found['rank_feasible'],
        'percentile_feasible': found['percentile_feasible'],
        'regret': gt['regret'],
    }


def best_record(config, space, objective, state: st.SearchState, journal: st.Journal) -> dict:
    """The content of best.json: the best-fitness member of the last generation, and more."""
    last = state.history[-1]
    best = describe(
        config, space, objective, last['best_genome'], last['best_score'], last['best_fitness']
    )
    bf = state.best_feasible
    best['best_feasible_seen'] = (
        None
        if bf is None
        else describe(config, space, objective, bf['genome'], bf['score'], bf['score'])
    )
    layers = str(config.proxy.get('score_layers', '') or '')
    best['score_is'] = (
        f'the CKA of matched layer(s) {layers} summed (proxy.score_layers)'
        if layers
        else "phi, the sum of every matched layer's CKA (the paper)"
    )
    best['evaluations'] = len(journal)
    best['generations'] = len(state.history)
    best['ground_truth'] = ground_truth(objective, best['genome'])
    return best


def within_noise(objective, scores: dict, ground_truth: dict, margin: float = NOISE) -> dict:
    """The feasible architectures the search scored within `margin` of the best one.

    The proxy cannot tell them apart, so the answer is one draw among them; for NAS-Bench-201
    their accuracies (evaluation only; the answer's own, and each other scored class's
    canonical cell's) say how much that draw matters.

    Args:
      objective: the search's objective (feasibility of each scored genome).
      scores: canonical genome -> the score the fitness ranks by.
      ground_truth: the answer's ``best.json['ground_truth']``.
      margin: the score's noise (:func:`noise_margin`).
    """
    genomes = [g for g, v in scores.items() if np.isfinite(v)]
    out = {'margin': margin, 'count': 0}
    if not genomes:
        return out
    penalty, _ = objective.penalties(np.asarray(genomes))
    feasible = [(g, scores[g]) for g, p in zip(genomes, penalty) if p == 0]
    if not feasible:
        return out
    top = max(v for _, v in feasible)
    near = [g for g, v in feasible if v >= top - margin]
    out.update(count=len(near), best_score=top)
    if ground_truth.get('applicable'):
        from hwnas_jax.spaces import nb201_truth

        acc = nb201_truth.accuracy(np.asarray(near), ground_truth['dataset'])
        found = ground_truth['found']
        key = tuple(int(v) for v in objective.space.canonical(found['genome']))
        if key in near:  # The answer's class: the answer's own accuracy, as reported above.
            acc[near.index(key)] = found['test_accuracy']
        out['test_accuracy'] = {
            'evaluation_only': True,
            'min': float(acc.min()),
            'median': float(np.median(acc)),
            'max': float(acc.max()),
        }
    return out


def log_summary(best: dict) -> None:
    keys = ('genome', 'arch_str', 'index', 'score', 'fitness')
    logging.info(
        'Best of the last generation: %s', json.dumps({k: best[k] for k in keys if k in best})
    )
    primary = best['constraints'].split(';')[0].split('<=')[0].strip()
    if primary in best['costs']:
        logging.info(
            'Its cost: %s = %s %s (budget %s)',
            primary,
            best['costs'][primary],
            best['cost_units'].get(primary, ''),
            best['constraints'],
        )
    gt = best.get('ground_truth') or {}
    if not gt.get('applicable'):
        logging.info('Ground truth: not available (%s)', gt.get('reason', 'not computed'))
        return
    found, bf = gt['found'], gt['best_feasible']
    logging.info(
        'Ground truth (evaluation only, NAS-Bench-201 %s, 200 epochs): test accuracy %.2f %% '
        '(rank %s of %d feasible, %s of all 15,625); best feasible %s; regret %s points',
        gt['dataset'],
        found['test_accuracy'],
        found['rank_feasible'],
        gt['num_feasible'],
        found['rank_all'],
        'none'
        if bf is None
        else f'{bf["test_accuracy"]:.2f} % (index {bf["index"]}, {bf["arch_str"]})',
        'n/a' if gt['regret'] is None else f'{gt["regret"]:.2f}',
    )
    near = best.get('within_noise') or {}
    if near.get('test_accuracy'):
        acc = near['test_accuracy']
        logging.info(
            'Within the proxy noise of the best score (%g): %d feasible architectures scored, '
            'test accuracy %.2f-%.2f %% (median %.2f): the proxy cannot tell them apart',
            near['margin'],
            near['count'],
            acc['min'],
            acc['max'],
            acc['median'],
        )


def plot(workdir: str, config, objective, state: st.SearchState, journal: st.Journal) -> None:
    """search.png: fitness per generation, feasible fraction, cost vs score of every member.

    Written only when matplotlib is installed (the `[plots]` extra).
    """
    try:
        import matplotlib

        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        logging.info('Install the [plots] extra (matplotlib) for search.png')
        return
    hist = state.history
    gens = [r['generation'] + 1 for r in hist]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(gens, [r['best_fitness'] for r in hist], label='best fitness')
    ax1.plot(
        gens,
        [np.nan if r.get('mean_fitness') is None else r['mean_fitness'] for r in hist],
        label='mean fitness',
    )
    ax1.set_xlabel('generation')
    ax1.set_ylabel('fitness (score + penalty)')
    twin = ax1.twinx()
    twin.plot(gens, [r['feasible_fraction'] for r in hist], 'g:', label='feasible fraction')
    twin.set_ylim(0, 1.05)
    twin.set_ylabel('feasible fraction')
    ax1.legend(loc='lower right')
    genomes = np.asarray(list(journal.records), np.int64)
    if len(genomes):
        costs = objective.costs(genomes)[0]
        scores = np.asarray([journal[tuple(g)]['score'] for g in genomes.tolist()])
        c0 = objective.constraints[0]
        ax2.scatter(costs, scores, s=10, alpha=0.7)
        ax2.axvline(c0.limit, color='r', ls='--', label=f'budget {c0.name} <= {c0.limit:g}')
        ax2.set_xlabel(f'{c0.name} ({objective.space.unit(c0.metric)})')
        ax2.set_ylabel('RMI score phi')
        ax2.set_title(f'{len(genomes)} architectures trained')
        ax2.legend()
    fig.tight_layout()
    fileio.save_figure(os.path.join(workdir, 'search.png'), fig)
    plt.close(fig)
