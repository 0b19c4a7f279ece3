"""Base config: every field of every job, with a one-line comment each.

Run: not directly; the other configs start from this one and change a few fields.
Expect: nothing on its own. The fields and their comments live in `hwnas_jax/config.py`
  (`get_config`), with the one `validate` that checks them before a job runs.
"""

from hwnas_jax.config import PRESETS, get_config, search_preset

__all__ = ['PRESETS', 'get_config', 'search_preset']
