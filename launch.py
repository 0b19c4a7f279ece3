"""Entry point: python launch.py --config configs/X.py [--config.a.b=value] [--workdir DIR].

Runs the job named by `config.job` (search, train_reference, train_arch, figure5) in a work
directory. Rerunning with the same --workdir resumes where the last run stopped.
"""

import datetime
import json
import os
import pathlib
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None,
                               'Work directory; default workdirs/<config>-<timestamp>.')
_TRACEBACK = flags.DEFINE_bool('traceback', False,
                               'Show the full traceback of a user error (for bug reports).')


def _default_workdir() -> str:
    name = pathlib.Path(_CONFIG.config_filename or 'config').stem
    stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
    return os.path.join('workdirs', f'{name}-{stamp}')


def _write_json(path: str, obj) -> None:
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def _run(config, workdir: str) -> None:
    # Imported here so that --help and config errors do not pay for importing JAX.
    import jax

    from hwnas_jax import jobs

    if not os.environ.get('JAX_COMPILATION_CACHE_DIR'):
        # A resumed search does not pay for compiling its networks again.
        jax.config.update('jax_compilation_cache_dir',
                          os.path.join(os.path.expanduser('~'), '.cache', 'hwnas_jax', 'xla'))
    logging.info('JAX %s, backend %s, devices %s', jax.__version__, jax.default_backend(),
                 jax.devices())
    logging.info('Config:\n%s', config)
    os.makedirs(workdir, exist_ok=True)
    logging.info('Work directory: %s', workdir)
    _write_json(os.path.join(workdir, 'config.json'), config.to_dict())
    with open(os.path.join(workdir, 'command.txt'), 'a') as f:
        f.write(' '.join(sys.argv) + '\n')
    jobs.run(config, workdir)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    config = _CONFIG.value
    if config is None:
        raise app.UsageError('--config is required, e.g. --config configs/nb201_latency.py')
    workdir = _WORKDIR.value or _default_workdir()
    try:
        _run(config, workdir)
    except (ValueError, OSError) as e:  # The library's user errors: bad input, missing files.
        if _TRACEBACK.value:
            raise
        logging.error('%s', e)
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f'interrupted; rerun with --workdir {workdir} to resume', file=sys.stderr)
        sys.exit(130)


if __name__ == '__main__':
    app.run(main)
