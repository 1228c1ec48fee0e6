"""Shared builders for the distillation tests (tiny models from the ``tiny_dirs`` fixture)."""

from __future__ import annotations

from madopd.distill import preset
from madopd.tasks.simple import SimpleTask

PROMPTS = [(f"q{i:02d}?", f"a{i:02d}", "even" if i % 2 == 0 else "odd") for i in range(24)]


def make_task():
    """16 training and 8 held-out prompts of equal length, two families."""
    return SimpleTask(PROMPTS[:16], PROMPTS[16:], name="tiny-qa")


def make_cfg(tiny_dirs, method="mad_opd", teachers=("teacher_a", "teacher_c"), **kw):
    base = dict(student=tiny_dirs["student"], teachers=[tiny_dirs[t] for t in teachers],
                batch_size=4, sampling={"max_new_tokens": 6, "temperature": 1.0},
                debate_sampling={"max_new_tokens": 6, "seed": 0, "temperature": 1.0},
                lr=1e-3, max_steps=20, schedule="constant", warmup_ratio=0.0, seed=0,
                record_topk=3)
    base.update(kw)
    return preset(method, **base)


def params_of(d):
    return [p.detach().clone() for p in d.student.model.parameters()]
