"""Smoke test of benchmarks/proxy_bench.py: a tiny config runs and prints parseable JSON lines."""

import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
FIELDS = {'strategy', 'conv_impl', 'population', 'channels', 'cells', 'steps', 'compile_s',
          'run_s', 'member_steps_per_s', 'images_per_s', 'ratio_vs_baseline', 'backend',
          'device_kind', 'search_s'}


def test_proxy_bench_tiny(tmp_path):
    out = tmp_path / 'bench.jsonl'
    # rbg keys compile the engine's initialiser several times faster than threefry (the
    # benchmark's README); the smoke test needs the lines, not the default's timings.
    env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_DEFAULT_PRNG_IMPL='unsafe_rbg')
    cmd = [sys.executable, 'benchmarks/proxy_bench.py', '--channels=4', '--cells=1',
           '--steps=1', '--population=2', '--archs=1', '--strategies=exact,loop', '--notorch',
           f'--out={out}']
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                         check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [json.loads(line) for line in res.stdout.splitlines() if line.startswith('{')]
    assert [c['strategy'] for c in lines] == ['exact', 'loop']
    assert [json.loads(line) for line in out.read_text().splitlines()] == lines
    for case in lines:
        assert FIELDS <= set(case), FIELDS - set(case)
        assert case['finite'] and case['run_s'] > 0 and case['member_steps_per_s'] > 0
        assert (case['channels'], case['cells'], case['steps']) == (4, 1, 1)
    assert lines[0]['ratio_vs_baseline'] == 1.0 and lines[1]['population'] == 2
