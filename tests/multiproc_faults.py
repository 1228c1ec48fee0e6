"""Launched by tests/test_distributed.py (``accelerate launch``, 2 processes): faults on ONE
process must skip the step on every process, with no hang and no update.

``python multiproc_faults.py CONFIG.json``: process 1's first teacher raises ``TeacherError``
at step 2 (``on_teacher_error: skip_step``; process 0 has a loss and runs its backward, process
1 joins with the zero-weighted backward) and process 1's student logits are NaN at step 3 (the
NaN policy: the summed gradient is NaN on every process). Rank 0 prints one JSON line per step:
the step's counters and every process's digest of the FULL weights (under FSDP each process
gathers every parameter, a collective all of them run in the same order).
"""

from __future__ import annotations

import json
import sys

import torch

from madopd.distill import Distiller
from madopd.distill.config import DistillConfig
from madopd.distill.distributed import gather_objects, is_sharded, leave_together
from madopd.errors import TeacherError
from madopd.tasks import get_task


def digest(d: Distiller) -> list[float]:
    """[Σ p, Σ p², Σ |p|·i] over the full weights, float64 (equal everywhere when in sync)."""
    s = s2 = si = 0.0
    for p in d.student.model.parameters():
        x = p.full_tensor() if is_sharded(d.accelerator) else p.detach()
        x = x.detach().double().reshape(-1)
        s += float(x.sum())
        s2 += float((x * x).sum())
        si += float((x.abs() * torch.arange(x.numel(), dtype=torch.float64)).sum())
    return [s, s2, si]


def main(path: str) -> None:
    cfg = DistillConfig.from_dict(json.loads(open(path).read()))
    d = Distiller.from_config(cfg, get_task(cfg.task))
    rank = d.accelerator.process_index
    teacher, student = d.teachers[0], d.student
    real_score, real_logits = teacher.score, student.response_logits

    def score(*a, **k):
        if rank == 1 and d.step_count == 2:
            raise TeacherError("injected: connection reset on process 1")
        return real_score(*a, **k)

    def logits(samples):
        lg, mask = real_logits(samples)
        return (lg * float("nan"), mask) if rank == 1 and d.step_count == 3 else (lg, mask)

    teacher.score, student.response_logits = score, logits
    for _ in range(cfg.max_steps):
        rec = d.step()
        digests = gather_objects(d.accelerator, digest(d))
        if rank == 0:
            m = rec.metrics
            print(json.dumps({"step": rec.step, "loss": rec.loss, "digests": digests,
                              "skipped": m.get("count/skipped_steps", 0),
                              "nan_skips": m.get("count/nan_skips", 0),
                              "teacher_errors": m.get("count/teacher_errors", 0)}), flush=True)
    leave_together(d.accelerator)  # the CLI's own ending (no gloo teardown deadlock)


if __name__ == "__main__":
    main(sys.argv[1])
