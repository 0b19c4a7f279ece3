"""Command-line helpers of launch.py: the list of configs, and config errors as one line."""

from __future__ import annotations

import ast
import difflib
import os
import pathlib
import re
import sys

from hwnas_jax import config as config_lib


def configs_dir() -> pathlib.Path:
    """The `configs/` folder next to the launched script."""
    return pathlib.Path(os.path.abspath(sys.argv[0])).parent / 'configs'


def list_configs() -> str:
    """One line per config file: its name, variants and the first line of its docstring."""
    lines = [
        'Configs (python launch.py --config configs/NAME.py[:VARIANT]; every field and its '
        'comment: hwnas_jax/config.py; override any with --config.FIELD=VALUE):'
    ]
    for path in sorted(configs_dir().glob('*.py')):
        if path.stem in ('__init__', 'base'):
            continue
        tree = ast.parse(path.read_text())
        doc = (ast.get_docstring(tree) or '').strip().splitlines()
        variants = []
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                getattr(t, 'id', '') == 'VARIANTS' for t in node.targets
            ):
                if isinstance(node.value, ast.Dict):
                    variants = [ast.literal_eval(k) for k in node.value.keys]
                elif getattr(node.value, 'attr', '') == 'PRESETS':  # VARIANTS = base.PRESETS
                    variants = list(config_lib.PRESETS)
        name = f'configs/{path.name}' + (f' [:{"|".join(variants)}]' if variants else '')
        lines.append(f'  {name:44s} {doc[0] if doc else ""}')
    return '\n'.join(lines)


def _overrides(argv) -> list[str]:
    return [a.split('=', 1)[0][len('--config.') :] for a in argv if a.startswith('--config.')]


def config_error(e: Exception, argv) -> str:
    """One line for an error raised while loading the config file or its overrides."""
    text = str(e).strip()
    config_arg = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), None)
    if config_arg is None and '--config' in argv and argv.index('--config') + 1 < len(argv):
        config_arg = argv[argv.index('--config') + 1]
    path = (config_arg or '').partition(':')[0]
    if path and not os.path.isfile(path):
        near = difflib.get_close_matches(
            os.path.basename(path), [p.name for p in configs_dir().glob('*.py')], 1, 0.8
        )
        hint = f' (did you mean configs/{near[0]}?)' if near else ''
        return (
            f'config file {path!r} not found{hint}; run from the repository root, '
            '--help_configs lists the configs'
        )
    if 'Did you mean' in text or isinstance(e, (AttributeError, KeyError)):
        match = re.search(r'Did you mean "(\w+)" instead of "(\w+)"', text)
        field = next(
            (o for o in _overrides(argv) if match and o.endswith(match.group(2))), None
        ) or (match.group(2) if match else text.splitlines()[0])
        hint = f' (did you mean {match.group(1)!r}?)' if match else ''
        return (
            f'the config has no field {field!r}{hint}; every field is listed in hwnas_jax/config.py'
        )
    if 'Error whilst parsing config file' in text:  # get_config raised: its last line says why.
        last = [x.strip() for x in text.splitlines() if x.strip()][-1]
        return re.sub(r'^[\w.]+Error: ', '', last)
    first = text.splitlines()[0] if text else type(e).__name__
    return f'{first.removeprefix("flag ")}'
