"""A SmolLM2 student scored by a Gemma-3-270M teacher through byte-offset spans (real models).

Marked ``real``; skipped, saying why, unless ``madopd models pull gemma3-270m`` (and the
SmolLM2 pull) have filled the cache.
"""

from __future__ import annotations

import pytest
import torch
from test_gemma import NAME, _pulled

STUDENT = "smollm2-135m-instruct"


def _student_pulled() -> bool:
    from madopd.models.catalogue import CHECKSUMS, folder_of

    return (folder_of(STUDENT) / CHECKSUMS).is_file()


pytestmark = [pytest.mark.real,
              pytest.mark.skipif(not (_pulled() and _student_pulled()),
                                 reason="needs: madopd models pull gemma3-270m && madopd models "
                                        "pull smollm2-135m-instruct")]

RESPONSES = ["The answer is 42.", "Café, naïve — 日本語 🙂!", "def f(x):\n    return x * 2"]


def test_student_token_logprobs_sum_to_gemmas_own_sequence_logprob():
    from madopd.crosstok.teacher import CrossTokenizerTeacher
    from madopd.divergence.sampled import student_token_logprobs, teacher_token_logprobs
    from madopd.models.hf import HFStudent, HFTeacher
    from madopd.types import Samples

    torch.set_num_threads(2)
    teacher = HFTeacher(NAME, name="gemma", chat_template="plain")
    student = HFStudent(STUDENT)
    stok, gtok = student.tokenizer, teacher.tokenizer
    chats = [[{"role": "user", "content": f"Say something {i}."}] for i in range(len(RESPONSES))]
    ids = [list(stok(r, add_special_tokens=False)["input_ids"]) + [stok.eos_token_id]
           for r in RESPONSES]
    wrap = CrossTokenizerTeacher(teacher, stok, mode="sampled")
    sc = wrap.score(chats, ids)
    from madopd.models._common import render_prompt_ids

    prompts = [render_prompt_ids(stok, c) for c in chats]
    with torch.no_grad():
        samples = Samples(prompts, ids, RESPONSES, [False] * len(ids))
        logits, mask = student.response_logits(samples)  # [B, T, V]
        y = torch.zeros(mask.shape, dtype=torch.long)
        for b, r in enumerate(ids):
            y[b, : len(r)] = torch.tensor(r)
        q = student_token_logprobs(logits.double(), y)
        p, known = teacher_token_logprobs(sc.dists, y, q, mask & sc.mask, 1.0)
    assert bool(known[mask].all()), wrap.crosstok_counters  # everything aligned, nothing masked
    for b, text in enumerate(RESPONSES):
        g_ids = list(gtok(text, add_special_tokens=False)["input_ids"]) + [gtok.eos_token_id]
        own = teacher.score([chats[b]], [g_ids]).dists[0]
        seq = float(own.double().gather(-1, torch.tensor(g_ids)[:, None]).sum())
        assert float(p[b, : len(ids[b])].sum()) == pytest.approx(seq, abs=1e-4)
    assert wrap.crosstok_counters["crosstok/multi_token_spans"] >= 1  # the test means spans
