"""Student rollouts from a REAL vLLM server whose weights follow the student (marker ``vllm``).

The client is plain HTTP, so these run in the main environment (transformers 5.x) against a
CPU server started from the vLLM venv (``.ci/extra_vllm.sh`` step 3; ``MADOPD_VLLM_REQUIRED=1``
turns a missing venv into a failure). The server runs in development mode on its own copy of
the tiny student (``vllm_dev_server``, tests/models/conftest.py).

Checked: after every weight sync, the server's log-probs of the tokens it sampled equal the HF
student's forward within ``TOL`` (the colocated engine's tolerance), for full fine-tuning and
LoRA (merged), and an optimizer step without a sync is seen (> 100 TOL); a 3-step Distiller run
with ``rollout_backend="vllm_server"`` whose server follows: after step k its log-probs match
the HF student after step k and not the initial one; resume syncs too; a server without dev
mode refuses the update with one clear error (the shared ``vllm_server`` fixture).
"""

from __future__ import annotations

import pytest
import torch
from vllm_rollout_helpers import TOL, make_states, max_gap, train_step

from madopd.errors import RolloutError

pytestmark = pytest.mark.vllm












@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_server_logprobs_equal_hf_after_each_sync(vllm_dev_server, tmp_path, lora):
    from madopd.models.hf import HFStudent, LoraSpec
    from madopd.models.vllm_rollout_server import VLLMServerRollout
    from madopd.types import Sampling

    url, model_dir = vllm_dev_server
    student = HFStudent(model_dir, lora=LoraSpec(r=4, alpha=32.0) if lora else None)
    if lora:  # peft starts B at 0 (a no-op adapter): give it weight so the merge matters
        with torch.no_grad():
            for n, p in student.model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.05)
    engine = VLLMServerRollout(student, url, weights_dir=tmp_path / "w")
    opt = torch.optim.AdamW(student.parameters(), lr=3e-2 if lora else 1e-2)
    gaps = []
    for step in range(3):
        samples = engine.rollout(make_states(4), Sampling(temperature=1.0, max_new_tokens=12,
                                                      seed=100 + step))
        gaps.append(max_gap(student, samples))
        assert gaps[-1] <= TOL, (step, gaps)
        train_step(student, opt, samples)
        stale = max_gap(student, samples)  # the server still holds the old weights
        assert stale > 100 * TOL, f"the step did not move the log-probs ({stale:.2e})"
        engine.sync()
    print(f"\nvLLM server vs HF ({'LoRA merged' if lora else 'full'}): max |d logprob| after "
          f"each sync {[f'{g:.1e}' for g in gaps]}; sync {engine.counters['sync_seconds'] / 4:.3f}"
          " s each")
    assert engine.counters["weight_syncs"] == 4  # the initial load + 3


def test_distiller_with_server_rollouts_follows_the_student(vllm_dev_server, tmp_path):
    from madopd.distill import Distiller, preset
    from madopd.models.hf import HFStudent
    from madopd.models.tiny import TinySpec, build_tiny_model
    from madopd.runs import RunStore
    from madopd.tasks.simple import SimpleTask
    from madopd.types import Sampling

    url, model_dir = vllm_dev_server
    teacher = tmp_path / "teacher"
    build_tiny_model(teacher, TinySpec(seed=8, hidden_size=96, num_heads=3, num_kv_heads=1))
    task = SimpleTask([(f"What is {i} + {i}?", str(2 * i)) for i in range(8)],
                      [("What is 1 + 2?", "3")], name="add")
    cfg = preset("opd", student=model_dir, teachers=[str(teacher)], batch_size=4,
                 sampling={"max_new_tokens": 8, "temperature": 1.0}, lr=1e-2, max_steps=3,
                 rollout_backend="vllm_server", rollout_server_url=url + "/v1",
                 rollout_weights_dir=str(tmp_path / "w"), device="cpu", record_topk=0,
                 verify_train=False, checkpoint_every=0, warmup_ratio=0.0, schedule="constant")
    d = Distiller.from_config(cfg, task, store=RunStore(tmp_path / "run", cfg.to_dict()))
    eng = d.rollout_engine
    assert d.sampler is eng and eng.counters["weight_syncs"] == 1
    initial = HFStudent(model_dir)  # the weights the server started from
    probe = Sampling(temperature=1.0, max_new_tokens=8, seed=9)
    for k in range(1, 4):
        record = d.step()
        assert torch.isfinite(torch.tensor(record.loss))
        assert record.metrics["count/rollout/weight_syncs"] == 1
        assert record.metrics["rollout/sync_seconds"] > 0
        samples = eng.rollout(make_states(4, "after"), probe)
        follows, initial_gap = max_gap(d.student, samples), max_gap(initial, samples)
        print(f"step {k}: |server - HF student after step {k}| = {follows:.1e}, "
              f"|server - initial student| = {initial_gap:.1e}")
        assert follows <= TOL and initial_gap > 100 * TOL, (k, follows, initial_gap)
    assert eng.counters["weight_syncs"] == 4
    # resume: the student's weights come back from the checkpoint, and so must the server's
    d.save_checkpoint()
    with torch.no_grad():
        for p in d.student.model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    eng.sync()
    d.resume()
    assert max_gap(d.student, eng.rollout(make_states(4, "after"), probe)) <= TOL
    assert eng.counters["weight_syncs"] == 6


def test_server_without_dev_mode_refuses_the_update(vllm_server, tmp_path):
    from madopd.models.hf import HFStudent
    from madopd.models.vllm_rollout_server import VLLMServerRollout

    url, model_dir = vllm_server  # the teachers' server: no VLLM_SERVER_DEV_MODE
    with pytest.raises(RolloutError, match=r"weight update refused: .*/collective_rpc -> HTTP "
                                           r"404.*VLLM_SERVER_DEV_MODE=1"):
        VLLMServerRollout(HFStudent(model_dir), url, weights_dir=tmp_path / "w")
