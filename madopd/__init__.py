"""madopd: on-policy distillation from a debating collective of teachers (MAD-OPD).

The core primitives are importable from submodules without pulling in the notebook stack:
``madopd.divergence`` (losses), ``madopd.weighting`` (confidence weights), ``madopd.debate``
(the debate engine), ``madopd.distill`` (the one training loop).
"""

__version__ = "0.1.0"
