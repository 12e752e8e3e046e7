"""Top-level import name for the AM-MRG configuration; the code lives in `modeling_amrg/configuration_amrg.py`
(inside the package so that `save_pretrained` can ship it as remote code)."""

from modeling_amrg.configuration_amrg import *  # noqa: F401,F403
from modeling_amrg.configuration_amrg import __all__  # noqa: F401
