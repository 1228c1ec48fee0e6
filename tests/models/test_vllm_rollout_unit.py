"""The parts of the colocated vLLM rollout engine that need no vLLM (default suite).

``merged_state_dict`` is what the engine loads at every sync: it must equal peft's own merge
(``merge_and_unload``) without touching the training weights; the config choice validates;
without vLLM the engine is one clear error, not an ImportError deep inside.
"""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch

from madopd.distill.config import DistillConfig
from madopd.errors import ConfigError, MissingExtraError


def test_merged_state_dict_equals_peft_merge_and_leaves_weights_alone(tiny_dirs):
    from madopd.models.hf import HFStudent, LoraSpec
    from madopd.models.vllm_rollout import merged_state_dict

    st = HFStudent(tiny_dirs["student"], lora=LoraSpec(r=4, alpha=8.0))
    with torch.no_grad():
        for n, p in st.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)  # a non-zero adapter: the merge has something to add
    before = {k: v.clone() for k, v in st.model.state_dict().items()}
    got = merged_state_dict(st.model)
    want = copy.deepcopy(st.model).merge_and_unload().state_dict()
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=0, rtol=0)
    # at least one weight really changed by the merge, and the training model did not move
    base = {k.replace("base_model.model.", "").replace(".base_layer.", "."): v
            for k, v in before.items() if "lora_" not in k}
    assert any(not torch.equal(got[k], base[k]) for k in got)
    for k, v in st.model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_merged_state_dict_of_a_plain_model_is_its_state_dict(tiny_dirs):
    from madopd.models.hf import HFStudent
    from madopd.models.vllm_rollout import merged_state_dict

    st = HFStudent(tiny_dirs["student"])
    got = merged_state_dict(st.model)
    sd = st.model.state_dict()
    assert set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd)
    assert not any(v.requires_grad for v in got.values())


def test_rollout_backend_config_validates():
    assert DistillConfig().rollout_backend == "hf"
    DistillConfig(rollout_backend="vllm_colocated", rollout_max_model_len=1024)
    with pytest.raises(ConfigError, match="rollout_backend"):
        DistillConfig(rollout_backend="sglang")  # not a backend: refused, not ignored
    with pytest.raises(ConfigError, match="rollout_max_model_len"):
        DistillConfig(rollout_max_model_len=1)
    with pytest.raises(ConfigError, match="rollout_gpu_memory_utilization"):
        DistillConfig(rollout_gpu_memory_utilization=0.0)
    cfg = DistillConfig.from_dict({"rollout_backend": "vllm_colocated"})
    assert DistillConfig.from_dict(cfg.to_dict()).rollout_backend == "vllm_colocated"


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_colocated_engine_without_vllm_is_one_clear_error(tiny_dirs, monkeypatch):
    from madopd.models.hf import HFStudent
    from madopd.models.vllm_rollout import VLLMColocatedRollout

    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    with pytest.raises(MissingExtraError, match="vllm"):
        VLLMColocatedRollout(HFStudent(tiny_dirs["student"]))


def test_colocated_engine_refuses_multiprocessing_engine_core(tiny_dirs, monkeypatch):
    from madopd.models.hf import HFStudent
    from madopd.models.vllm_rollout import VLLMColocatedRollout

    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    with pytest.raises(ConfigError, match="VLLM_ENABLE_V1_MULTIPROCESSING"):
        VLLMColocatedRollout(HFStudent(tiny_dirs["student"]))
