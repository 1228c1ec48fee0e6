"""The one distillation loop: ``DistillConfig``, ``PRESETS``, ``Distiller``.

    from madopd.distill import Distiller, preset
    cfg = preset("mad_opd", student="ckpt/student", teachers=["ckpt/a", "ckpt/b"])
    d = Distiller.from_config(cfg, task)
    record = d.step()          # one step, everything it produced (a StepRecord)
    d.train(100)               # with a progress bar; callbacks get every record
    d.evaluate()               # greedy accuracy per family
"""

from madopd.distill.config import PRESETS, DistillConfig, apply_overrides, preset, read_config_file
from madopd.distill.loop import Distiller

__all__ = ["PRESETS", "DistillConfig", "Distiller", "apply_overrides", "preset",
           "read_config_file"]
