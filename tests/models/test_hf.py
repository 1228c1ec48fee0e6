"""HFTeacher / HFStudent against brute-force references on tiny real checkpoints."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from madopd.errors import ConfigError, TokenizerMismatchError, ValueRangeError
from madopd.models._common import render_prompt_ids
from madopd.models.hf import HFStudent, HFTeacher, LoraSpec, check_same_vocab
from madopd.models.tiny import TinySpec, build_tiny_model
from madopd.types import Sampling, State, Teacher, TopKLogprobs

CHATS = [
    [{"role": "user", "content": "Q: 12+34="}],
    [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a much longer question here?"}],
    [{"role": "user", "content": "x"}],
]
CONTS = [[65, 66, 67, 68, 257], [70], [71, 72, 73]]  # different lengths on purpose


@pytest.fixture(scope="module")
def teacher(tiny_dirs):
    return HFTeacher(tiny_dirs["teacher_a"])


@pytest.fixture(scope="module")
def varied(tmp_path_factory):
    """A tiny model with a wide init, so greedy replies depend on the prompt (the default init
    repeats one token whatever the prompt, which would make batched-vs-single checks vacuous)."""
    path = tmp_path_factory.mktemp("varied")
    build_tiny_model(path, TinySpec(hidden_size=64, num_layers=1, num_heads=2, num_kv_heads=1,
                                    intermediate_size=128, seed=5, extra={"initializer_range": 0.3}))
    return HFTeacher(path)


def manual_logprobs(model, prompt, cont):
    """Reference: full forward over prompt+cont (no padding), log_softmax, slice len(P)-1 ..."""
    ids = torch.tensor([prompt + cont])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()  # [L, V]
    lp = torch.log_softmax(logits, -1)
    return lp[len(prompt) - 1: len(prompt) + len(cont) - 1]  # [T, V]


def test_teacher_protocol(teacher):
    assert isinstance(teacher, Teacher)
    assert teacher.name == "teacher_a"
    assert not any(p.requires_grad for p in teacher.model.parameters())


def test_teacher_on_a_shared_model_leaves_it_trainable(tiny_dirs):
    stu = HFStudent(tiny_dirs["student"])
    same = HFTeacher(stu.model, stu.tokenizer, name="self")
    assert all(p.requires_grad for p in stu.model.parameters()) and stu.model.training
    same.score(CHATS, CONTS)
    assert stu.model.training  # score restored the mode


def test_score_equals_manual_forward(teacher):
    s = teacher.score(CHATS, CONTS)
    B, T, V = s.dists.shape
    assert (B, T, V) == (3, 5, len(teacher.tokenizer)) and s.dists.dtype == torch.float32
    assert s.mask.tolist() == [[True] * 5, [True] + [False] * 4, [True] * 3 + [False] * 2]
    assert s.truncated == [False] * 3
    for b, (chat, cont) in enumerate(zip(CHATS, CONTS)):
        ref = manual_logprobs(teacher.model, render_prompt_ids(teacher.tokenizer, chat), cont)
        torch.testing.assert_close(s.dists[b, : len(cont)].double(), ref, atol=1e-5, rtol=0)
    # pre-tokenised contexts give the same result
    s2 = teacher.score([render_prompt_ids(teacher.tokenizer, c) for c in CHATS], CONTS)
    torch.testing.assert_close(s2.dists, s.dists)
    # batch size 1 (no padding at all) gives the same result as the padded batch
    t1 = HFTeacher(teacher.model, teacher.tokenizer, batch_size=1)
    torch.testing.assert_close(t1.score(CHATS, CONTS).dists, s.dists, atol=1e-5, rtol=0)


def test_topk_full_equals_dense_and_tail_mass(teacher):
    dense = teacher.score(CHATS, CONTS).dists
    V = dense.shape[-1]
    full = teacher.score(CHATS, CONTS, top_k=V).dists
    assert isinstance(full, TopKLogprobs) and full.ids.shape == (3, 5, V)
    rebuilt = torch.full_like(dense, float("nan")).scatter(-1, full.ids, full.logprobs)
    torch.testing.assert_close(rebuilt, dense)
    assert full.tail_mass.abs().max() < 1e-5
    k5 = teacher.score(CHATS, CONTS, top_k=5).dists
    p_sorted = dense.double().exp().sort(-1, descending=True).values
    torch.testing.assert_close(k5.tail_mass.double(), (1 - p_sorted[..., :5].sum(-1)).clamp_min(0),
                               atol=1e-6, rtol=0)
    assert (k5.logprobs[..., :-1] >= k5.logprobs[..., 1:]).all()
    assert all(len(set(r)) == 5 for r in k5.ids.reshape(-1, 5).tolist())


def test_empty_continuations(teacher):
    s = teacher.score(CHATS[:2], [[], [66]])
    assert s.dists.shape[:2] == (2, 1) and s.mask.tolist() == [[False], [True]]
    s0 = teacher.score(CHATS[:1], [[]])
    assert s0.dists.shape[:2] == (1, 0)


def test_generate_greedy_and_seeded(varied):
    teacher = varied
    g = Sampling(greedy=True, max_new_tokens=6)
    assert teacher.generate(CHATS, g) == teacher.generate(CHATS, g)
    _, batched, _ = teacher.generate_ids(CHATS, g)
    singles = [teacher.generate_ids([c], g)[1][0] for c in CHATS]
    assert batched == singles and len({tuple(r) for r in batched}) == 3
    # greedy = argmax of the scored distributions at every generated position
    sc = teacher.score(CHATS, batched).dists
    assert sc.argmax(-1).tolist() == batched
    s = Sampling(temperature=1.0, max_new_tokens=6, seed=3)
    torch.manual_seed(123)
    a = teacher.generate_ids(CHATS, s)[1]
    after = torch.rand(1)
    torch.manual_seed(123)
    b = teacher.generate_ids(CHATS, s)[1]
    assert a == b and torch.equal(after, torch.rand(1))  # seeded, global RNG stream untouched
    c = teacher.generate_ids(CHATS, Sampling(temperature=1.0, max_new_tokens=6, seed=4))[1]
    assert c != a
    # unseeded sampling advances the global stream: two calls differ
    free = Sampling(temperature=1.0, max_new_tokens=6)
    assert teacher.generate_ids(CHATS, free)[1] != teacher.generate_ids(CHATS, free)[1]


def test_seeded_generation_is_deterministic_across_threads(varied, teacher):
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(varied, Sampling(temperature=1.0, max_new_tokens=6, seed=1)),
            (teacher, Sampling(temperature=1.0, max_new_tokens=6, seed=2)),
            (varied, Sampling(greedy=True, max_new_tokens=6)),
            (teacher, Sampling(temperature=1.0, max_new_tokens=6))]
    alone = [t.generate_ids(CHATS, s)[1] for t, s in jobs[:3]]
    for _ in range(2):
        with ThreadPoolExecutor(4) as ex:
            together = list(ex.map(lambda job: job[0].generate_ids(CHATS, job[1])[1], jobs))
        assert together[:3] == alone


def test_generate_respects_max_new_tokens_and_eos(teacher):
    # temperature 50 ~ uniform over 264 tokens: some replies hit EOS within 48 tokens, some not
    n = 48
    _, replies, hit = teacher.generate_ids(CHATS * 4, Sampling(max_new_tokens=n, seed=0, temperature=50.0))
    eos = teacher.tokenizer.eos_token_id
    for r, h in zip(replies, hit):
        assert 1 <= len(r) <= n
        assert eos not in r[:-1]  # stops at the first EOS, which is kept
        assert h == (r[-1] != eos) and (not h or len(r) == n)
    assert any(hit) and not all(hit)


def test_sampling_validation(teacher):
    with pytest.raises(ValueRangeError, match="top_p"):
        teacher.generate(CHATS, Sampling(top_p=0.0))
    with pytest.raises(ValueRangeError, match="max_new_tokens"):
        teacher.generate(CHATS, Sampling(max_new_tokens=0))


@pytest.fixture(scope="module")
def student(tiny_dirs):
    return HFStudent(tiny_dirs["student"])


def test_rollout_consistent(student):
    states = [State(id=str(i), messages=c) for i, c in enumerate(CHATS)]
    smp = student.rollout(states, Sampling(max_new_tokens=8, seed=0, temperature=1.5))
    eos = student.tokenizer.eos_token_id
    assert len(smp.prompt_ids) == len(smp.response_ids) == len(smp.texts) == len(smp.truncated) == 3
    for st, p, r, text, tr in zip(states, smp.prompt_ids, smp.response_ids, smp.texts, smp.truncated):
        assert p == render_prompt_ids(student.tokenizer, st.messages)
        assert text == student.tokenizer.decode(r, skip_special_tokens=True)
        assert tr == (r[-1] != eos) and eos not in r[:-1]
    assert student.model.training  # rollout restores train mode


def test_response_logits_equal_score_and_have_grad(tiny_dirs, student):
    states = [State(id=str(i), messages=c) for i, c in enumerate(CHATS)]
    smp = student.rollout(states, Sampling(max_new_tokens=7, seed=1, temperature=1.5))
    logits, mask = student.response_logits(smp)
    assert logits.requires_grad and mask.shape == logits.shape[:2]
    as_teacher = HFTeacher(tiny_dirs["student"]).score(smp.prompt_ids, smp.response_ids)
    lp = torch.log_softmax(logits.float(), -1)
    torch.testing.assert_close(lp[mask], as_teacher.dists[as_teacher.mask], atol=1e-5, rtol=0)
    logits[mask].logsumexp(-1).sum().backward()
    assert all(p.grad is not None for p in student.parameters())
    student.model.zero_grad(set_to_none=True)


def _nll_step(stu, smp, opt):
    logits, mask = stu.response_logits(smp)
    tgt = torch.zeros(mask.shape, dtype=torch.long)
    for b, r in enumerate(smp.response_ids):
        tgt[b, : len(r)] = torch.tensor(r)
    loss = torch.nn.functional.cross_entropy(logits[mask], tgt[mask])
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def test_lora_trains_adapters_only_and_round_trips(tiny_dirs, tmp_path):
    with pytest.raises(ConfigError, match="r must be"):
        LoraSpec(r=0)
    with pytest.raises(ConfigError, match="dropout"):
        LoraSpec(dropout=1.0)
    stu = HFStudent(tiny_dirs["student"], lora=LoraSpec(r=4, target_modules=("q_proj", "v_proj")))
    assert stu.is_lora and all("lora_" in n for n, p in stu.model.named_parameters() if p.requires_grad)
    before = {n: p.detach().clone() for n, p in stu.model.named_parameters()}
    states = [State(id=str(i), messages=c) for i, c in enumerate(CHATS)]
    smp = stu.rollout(states, Sampling(max_new_tokens=6, seed=2, temperature=1.5))
    opt = torch.optim.Adam(stu.parameters(), lr=1e-2)
    losses = [_nll_step(stu, smp, opt) for _ in range(4)]
    assert losses[-1] < losses[0]
    for n, p in stu.model.named_parameters():
        changed = not torch.equal(before[n], p.detach())
        assert changed == ("lora_" in n), n
    stu.eval()
    ref = stu.score(smp.prompt_ids, smp.response_ids).dists
    stu.save(tmp_path / "adapter", merged=True)
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    loaded = HFStudent.load(tmp_path / "adapter")
    assert loaded.is_lora and loaded.parameters()
    torch.testing.assert_close(loaded.eval().score(smp.prompt_ids, smp.response_ids).dists, ref,
                               atol=1e-5, rtol=0)
    merged = HFTeacher(tmp_path / "adapter" / "merged")
    torch.testing.assert_close(merged.score(smp.prompt_ids, smp.response_ids).dists, ref,
                               atol=1e-5, rtol=0)


def test_full_student_save_load(tiny_dirs, tmp_path):
    stu = HFStudent(tiny_dirs["student"])
    assert not stu.is_lora and len(stu.parameters()) == len(list(stu.model.parameters()))
    with torch.no_grad():
        stu.model.model.norm.weight.add_(0.5)  # make it differ from the base checkpoint
    stu.save(tmp_path / "full")
    a = stu.score(CHATS, CONTS).dists
    b = HFStudent.load(tmp_path / "full").score(CHATS, CONTS).dists
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    c = HFTeacher(tiny_dirs["student"]).score(CHATS, CONTS).dists
    assert (a - c).abs().max() > 1e-3


def test_truncation_left_and_error(tiny_dirs, teacher):
    prompts = [render_prompt_ids(teacher.tokenizer, c) for c in CHATS]
    n = 12  # some samples fit, some need a cut (asserted below)
    t = HFTeacher(teacher.model, teacher.tokenizer, max_context=n, truncation="left")
    s = t.score(CHATS, CONTS)
    expect = [len(p) + len(c) > n for p, c in zip(prompts, CONTS)]
    assert s.truncated == expect and any(expect) and not all(expect)
    assert t.counters["truncated_contexts"] == sum(expect)
    cut = [p[-(n - len(c)):] if e else p for p, c, e in zip(prompts, CONTS, expect)]
    torch.testing.assert_close(s.dists, teacher.score(cut, CONTS).dists)
    strict = HFTeacher(teacher.model, teacher.tokenizer, max_context=n, truncation="error")
    bad = expect.index(True)
    with pytest.raises(ValueRangeError, match=f"sample {bad}: context"):
        strict.score(CHATS, CONTS)
    with pytest.raises(ValueRangeError, match="continuation alone"):
        t.score(CHATS[:1], [[66] * n])
    with pytest.raises(ConfigError, match="truncation"):
        HFTeacher(teacher.model, teacher.tokenizer, truncation="middle")


def test_vocab_check(tiny_dirs, tmp_path, teacher):
    stu = HFTeacher(tiny_dirs["student"])
    assert check_same_vocab(stu, [teacher, HFTeacher(tiny_dirs["teacher_b"])]) == len(stu.tokenizer)
    build_tiny_model(tmp_path / "other", TinySpec(hidden_size=32, num_layers=1, num_heads=1,
                                                  num_kv_heads=1, intermediate_size=64,
                                                  merged_tokens=("<<CONFIDENCE=", ">>", "def ")))
    other = HFTeacher(tmp_path / "other")
    with pytest.raises(TokenizerMismatchError, match="cross_tokenizer="):
        check_same_vocab(stu, [teacher, other])
    # same tokenizer, model padded to more logit columns (like real Qwen checkpoints)
    wide_model = AutoModelForCausalLM.from_pretrained(tiny_dirs["teacher_b"])
    wide_model.resize_token_embeddings(len(stu.tokenizer) + 8)
    wide = HFTeacher(wide_model, tiny_dirs["teacher_b"])
    assert wide.logit_width == len(stu.tokenizer) + 8
    with pytest.raises(TokenizerMismatchError, match="restrict_to_tokenizer"):
        check_same_vocab(stu, [wide])
    assert check_same_vocab(stu, [wide], restrict_to_tokenizer=True) == len(stu.tokenizer)
    s = wide.score(CHATS, CONTS).dists
    assert s.shape[-1] == len(stu.tokenizer)
    torch.testing.assert_close(s.exp().sum(-1), torch.ones(s.shape[:2]))
