"""`madopd doctor`: is this set-up sound, before a long run? (issue 24, item 2)

``run_doctor(config)`` loads the config's student, teachers and task and returns one
:class:`Check` per question below; ``ok`` is True (✓), False (✗, with a one-line ``fix``) or None
(not applicable to this config, with the reason). ``madopd doctor CONFIG`` prints them as a
table (or ``--json``) and exits non-zero on any ✗.

1. tokenizer      student and teachers share one vocabulary (``check_same_vocab``)
2. chat/EOS       every chat template closes an assistant turn with an EOS id its model stops
                  at, and the teachers' end-of-turn token is the student's
3. windows        every training prompt + the rollout fits the student's window; every scoring
                  context (prompt + R·K debate turns at most + cue) + the response fits each
                  teacher's window
4. determinism    a teacher scores the same tokens twice (and alone vs in a batch) alike, 1e-5
5. temperature    the temperature T that explains a teacher's scored log-probs given its raw
                  logits (least squares of centred log p against centred logits: 1/T) is 1,
                  the temperature the divergence assumes (the loss divides both sides by
                  loss_temperature itself); a top-k or served teacher with loss_temperature ≠ 1
                  gets log-probs the loss cannot re-scale
6. zero loss      the student as its own teacher, on its own samples, gives D = 0 to 1e-6 per
                  token (position alignment, context rendering and temperature agree)
7. confidences    each teacher's confidence sources over one debate of 8 states (tag written,
                  fallback, missing); ✗ when half or more of a teacher's turns have none
8. cache key      the debate cache key of a state is the same twice, from a fresh Debate and
                  from a JSON copy of the state
9. sandbox        code tasks: a sandboxed run passes with full isolation
10. vllm          served teachers answer and agree with an HF forward of the same folder
11. disk          free space for the checkpoints the config writes (weights + AdamW moments)
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from madopd.errors import MadopdError, one_line

ZERO_LOSS_TOL = 1e-6
DETERMINISM_TOL = 1e-5
TEMPERATURE_TOL = 0.02
VLLM_TOL = 0.05  # nats, max |Δ log p| between a served teacher and HF on the same tokens
CONFIDENCE_STATES = 8


@dataclass
class Check:
    name: str
    ok: bool | None  # True ✓, False ✗, None not applicable
    detail: str
    fix: str = ""
    seconds: float = 0.0


@dataclass
class Context:
    """What the checks share: the config, loaded members, states and one batch of samples."""

    config: Any
    task: Any
    student: Any
    teachers: list
    states: list
    out_dir: Path
    samples: Any = None
    debate: Any = None


def _mark(ok: bool | None) -> str:
    return {True: "✓", False: "✗", None: "–"}[ok]


# ------------------------------------------------------------------------ individual checks
def check_tokenizer(ctx: Context) -> Check:
    from madopd.models.hf import check_same_vocab

    if not ctx.teachers:
        return Check("tokenizer", None, "no teachers")
    try:
        n = check_same_vocab(ctx.student, ctx.teachers)
    except MadopdError as exc:
        return Check("tokenizer", False, one_line(exc),
                     "use teachers of the student's family (one tokenizer); madopd does not "
                     "distil across vocabularies")
    return Check("tokenizer", True, f"student and {len(ctx.teachers)} teacher(s) share a "
                 f"vocabulary of {n} tokens")


def _turn_end_ids(member: Any) -> list[int]:
    """Token ids the chat template writes after an assistant turn's content."""
    from madopd.models._common import load_tokenizer

    tok = load_tokenizer(member.tokenizer)
    marker = "xq7"
    text = tok.apply_chat_template([{"role": "user", "content": "hi"},
                                    {"role": "assistant", "content": marker}], tokenize=False)
    tail = text[text.rindex(marker) + len(marker):]
    return list(tok(tail, add_special_tokens=False)["input_ids"])


def check_chat_eos(ctx: Context) -> Check:
    members = [("student", ctx.student)] + [(getattr(t, "name", f"teacher {i}"), t)
                                            for i, t in enumerate(ctx.teachers)]
    problems, ends = [], {}
    for name, m in members:
        eos = set(getattr(m, "eos_ids", set()) or {m.tokenizer.eos_token_id})
        try:
            tail = _turn_end_ids(m)
        except Exception as exc:  # no template, a template that rejects the roles
            problems.append(f"{name}: the chat template does not render a reply ({exc})")
            continue
        first_eos = next((i for i in tail if i in eos), None)
        if first_eos is None:
            problems.append(f"{name}: the chat template ends an assistant turn with "
                            f"{m.tokenizer.convert_ids_to_tokens(tail)!r}, no EOS id of "
                            f"{sorted(eos)}")
        ends[name] = first_eos
    s_end = ends.get("student")
    for name, end in ends.items():
        if name != "student" and end is not None and s_end is not None and end != s_end:
            problems.append(f"{name} ends a turn with id {end}, the student with {s_end}")
    if problems:
        return Check("chat template / EOS", False, "; ".join(problems),
                     "give every model a chat template whose assistant turn ends with the EOS "
                     "the student stops at (chat_template=..., generation_config eos_token_id)")
    return Check("chat template / EOS", True, f"every assistant turn ends with EOS id {s_end}")


def _score_bound(ctx: Context, state: Any, k: int) -> int:
    """Tokens of teacher k's scoring context for ``state`` at most: the context with empty
    turns + R·K debate turns of max_new_tokens each."""
    from madopd.models._common import render_prompt_ids
    from madopd.types import DebateMessage, Transcript

    cfg, debate = ctx.config, ctx.debate
    R, K = cfg.rounds, len(ctx.teachers)
    tr = None
    if R:
        tr = Transcript(state.id, list(debate.names), R,
                        [DebateMessage(j, r, "", "", 50.0) for r in range(1, R + 1)
                         for j in range(K)])
    ids = render_prompt_ids(ctx.teachers[k].tokenizer, debate.score_context(state, tr, k))
    return len(ids) + R * K * cfg.debate_sampling.max_new_tokens


def check_windows(ctx: Context) -> Check:
    from madopd.models._common import render_prompt_ids

    cfg = ctx.config
    new = cfg.sampling.max_new_tokens
    s_win = ctx.student.max_context
    s_len = [len(render_prompt_ids(ctx.student.tokenizer, s.messages)) for s in ctx.states]
    bad = [f"student: {sum(n + new > s_win for n in s_len)} of {len(s_len)} prompts + "
           f"{new} new tokens exceed its window of {s_win} (longest {max(s_len) + new})"] \
        if max(s_len) + new > s_win else []
    worst_t = 0
    for k, t in enumerate(ctx.teachers):
        win = getattr(t, "max_context", None)
        lens = [_score_bound(ctx, s, k) + new for s in ctx.states]
        worst_t = max(worst_t, max(lens))
        if win and max(lens) > win:
            bad.append(f"{t.name}: {sum(n > win for n in lens)} of {len(lens)} scoring "
                       f"contexts + responses may exceed its window of {win} "
                       f"(longest bound {max(lens)})")
    if bad:
        return Check("prompts fit the windows", False, "; ".join(bad),
                     "shorten the prompts, lower sampling/debate_sampling.max_new_tokens or "
                     "rounds, or use models with a longer window (contexts would be cut, "
                     "counted as truncated)")
    return Check("prompts fit the windows", True,
                 f"{len(ctx.states)} prompts: student ≤ {max(s_len) + new} of {s_win} tokens; "
                 f"teachers' scoring ≤ {worst_t} tokens")


def _scoring_inputs(ctx: Context, k: int, n: int = 2):
    states = ctx.states[:n]
    trs = [None] * len(states)
    chats = [ctx.debate.score_context(s, tr, k) for s, tr in zip(states, trs)]
    resp = [list(r) or [ctx.student.pad_id] for r in ctx.samples.response_ids[:n]]
    return chats, resp


def _dense(scores: Any) -> torch.Tensor:
    d = scores.dists
    return d.logprobs if hasattr(d, "logprobs") else d


def check_determinism(ctx: Context) -> Check:
    worst, bad = 0.0, []
    for k, t in enumerate(ctx.teachers):
        chats, resp = _scoring_inputs(ctx, k)
        with torch.no_grad():
            a = _dense(t.score(chats, resp, top_k=ctx.config.score_top_k)).float()
            b = _dense(t.score(chats, resp, top_k=ctx.config.score_top_k)).float()
            alone = _dense(t.score(chats[:1], resp[:1], top_k=ctx.config.score_top_k)).float()
        T0 = alone.shape[1]
        diff = max(float((a - b).abs().nan_to_num(0).max()),
                   float((a[:1, :T0] - alone).abs().nan_to_num(0).max()))
        worst = max(worst, diff)
        if diff > DETERMINISM_TOL:
            bad.append(f"{t.name}: max |Δ log p| {diff:.2e}")
    if bad:
        return Check("teachers score deterministically", False, "; ".join(bad),
                     "score in eval mode without dropout and with deterministic kernels "
                     "(the same tokens must get the same log-probs in every batch)")
    return Check("teachers score deterministically", True,
                 f"repeat and alone-vs-batch: max |Δ log p| {worst:.1e}")


def _raw_logits(t: Any, chat: Any, resp: list[int]) -> torch.Tensor | None:
    """Teacher t's raw logits at the response positions from a plain HF forward, or None."""
    from madopd.models._common import render_prompt_ids

    model = getattr(t, "base_model", None)
    if model is None:
        return None
    ctx_ids = render_prompt_ids(t.tokenizer, chat)
    dev = next(model.parameters()).device
    ids = torch.tensor([ctx_ids + resp], device=dev)
    with torch.no_grad():
        out = model(input_ids=ids).logits[0].float()
    return out[len(ctx_ids) - 1: len(ctx_ids) + len(resp) - 1]


def fitted_temperature(raw_logits: torch.Tensor, logprobs: torch.Tensor) -> float:
    """T with logprobs ≈ log_softmax(raw / T): 1/T is the least-squares slope of row-centred
    log p on row-centred logits (both [N, V], finite entries only)."""
    z = raw_logits.double()
    lp = logprobs.double()
    ok = torch.isfinite(lp) & torch.isfinite(z)
    z = torch.where(ok, z, 0.0)
    lp = torch.where(ok, lp, 0.0)
    n = ok.sum(-1, keepdim=True).clamp_min(1)
    zc = torch.where(ok, z - z.sum(-1, keepdim=True) / n, 0.0)
    lc = torch.where(ok, lp - lp.sum(-1, keepdim=True) / n, 0.0)
    inv_t = float((zc * lc).sum() / (zc * zc).sum().clamp_min(1e-30))
    return 1.0 / inv_t if inv_t > 0 else math.inf


def check_temperature(ctx: Context) -> Check:
    cfg = ctx.config
    dense = cfg.score_top_k is None and cfg.teacher_backend == "hf"
    if not dense and cfg.loss_temperature != 1.0:
        return Check("scoring temperature", False,
                     f"loss_temperature={cfg.loss_temperature} but the teachers return top-k or "
                     "served log-probs at T=1, which the loss cannot re-scale",
                     "set loss_temperature=1 or score dense in-process teachers")
    temps, bad = [], []
    for k, t in enumerate(ctx.teachers):
        chats, resp = _scoring_inputs(ctx, k, n=1)
        raw = _raw_logits(t, chats[0], resp[0])
        if raw is None:
            continue
        with torch.no_grad():
            lp = _dense(t.score(chats, resp)).float()[0, : len(resp[0])]
        T = fitted_temperature(raw, lp)
        temps.append(f"{t.name} {T:.3f}")
        if not abs(T - 1.0) <= TEMPERATURE_TOL:
            bad.append(f"{t.name} scores at T={T:.3f}")
    if bad:
        return Check("scoring temperature", False,
                     "; ".join(bad) + f" but the divergence assumes T=1 (loss_temperature="
                     f"{cfg.loss_temperature} divides both sides itself)",
                     "score teachers at temperature 1 (raw log-probs, not their sampling "
                     "temperature); set loss_temperature to change the loss's temperature")
    if not temps:
        return Check("scoring temperature", None, "no teacher with a local model to measure")
    return Check("scoring temperature", True, f"fitted T: {', '.join(temps)} (the loss divides "
                 f"both sides by loss_temperature={cfg.loss_temperature})")


def divergence_spec(cfg: Any, task: Any) -> Any:
    """The Distiller's divergence (``Distiller._divergence_spec``)."""
    from madopd.divergence import DivergenceSpec, divergence_for_task

    if cfg.divergence != "auto":
        return DivergenceSpec(cfg.divergence, cfg.beta)
    return divergence_for_task(task.kind if task.kind in ("agentic", "code") else "agentic")


def check_zero_loss(ctx: Context) -> Check:
    from madopd.divergence import divergence
    from madopd.models.hf import HFTeacher

    cfg, student = ctx.config, ctx.student
    twin = HFTeacher(student.base_model, student.tokenizer, name="student",
                     device=student.device, max_context=student.max_context)
    sub = ctx.samples
    n = len(sub.response_ids)
    chats = [s.messages for s in ctx.states[:n]]
    with torch.no_grad():
        scores = twin.score(chats, [list(r) for r in sub.response_ids], top_k=cfg.score_top_k)
        logits, mask = student.response_logits(sub)
        T = logits.shape[1]
        per_tok = divergence(logits, scores.dists, divergence_spec(cfg, ctx.task),
                             mask=mask, temperature=cfg.loss_temperature, reduction="none")
    tokens = int(mask[:, :T].sum())
    worst = float(per_tok[mask[:, :T]].abs().max()) if tokens else 0.0
    if tokens == 0:
        return Check("student = teacher gives zero loss", None, "the samples have no tokens")
    if worst > ZERO_LOSS_TOL:
        return Check("student = teacher gives zero loss", False,
                     f"max per-token D {worst:.2e} over {tokens} tokens (should be 0)",
                     "scoring and the student's forward disagree: check the chat template, "
                     "position alignment and dtype")
    return Check("student = teacher gives zero loss", True,
                 f"max per-token D {worst:.1e} over {tokens} tokens of {n} samples")


def check_confidences(ctx: Context) -> Check:
    cfg = ctx.config
    if cfg.rounds == 0 or cfg.weighting != "confidence" or not ctx.teachers:
        return Check("confidence sources", None, f"no confidence weights (rounds={cfg.rounds}, "
                     f"weighting={cfg.weighting!r})")
    states = ctx.states[:CONFIDENCE_STATES]
    transcripts = ctx.debate.run(states)
    rows, bad = [], []
    for k, name in enumerate(ctx.debate.names):
        counts: dict[str, int] = {}
        for tr in transcripts:
            for m in tr.messages:
                if m.teacher == k:
                    src = "failed" if m.failed else (
                        "missing" if m.confidence is None else (m.confidence_source or "tag"))
                    counts[src] = counts.get(src, 0) + 1
        total = sum(counts.values())
        rows.append(f"{name}: " + ", ".join(f"{s} {c}/{total}" for s, c in sorted(counts.items())))
        if counts.get("missing", 0) + counts.get("failed", 0) >= total / 2:
            bad.append(name)
    text = f"{len(states)} states: " + "; ".join(rows)
    if bad:
        return Check("confidence sources", False, text,
                     f"{', '.join(bad)} rarely write <<CONFIDENCE=N>>: set confidence_fallback "
                     "('forced_tag', 'forced_ask' or 'answer_logprob') or fix the templates")
    return Check("confidence sources", True, text)


def check_cache_key(ctx: Context) -> Check:
    from madopd.cache import DebateCache
    from madopd.debate import Debate
    from madopd.types import State

    if ctx.debate is None:
        return Check("debate cache key", None, "no debate")
    s = ctx.states[0]
    copy = State(**json.loads(json.dumps(asdict(s), default=str)))
    fresh = Debate(ctx.teachers, ctx.debate.protocol, names=list(ctx.debate.names))
    keys = {DebateCache().key(s, ctx.debate), DebateCache().key(s, ctx.debate),
            DebateCache().key(copy, fresh)}
    if len(keys) != 1:
        return Check("debate cache key", False, f"{len(keys)} different keys for one state",
                     "the teachers' or protocol's identity changes between runs: give them "
                     "fixed names and paths")
    return Check("debate cache key", True, f"stable ({next(iter(keys))[:12]}…)")


def check_sandbox(ctx: Context) -> Check:
    if getattr(ctx.task, "kind", None) != "code":
        return Check("sandbox", None, f"task kind {ctx.task.kind!r} runs no generated code")
    from madopd.sandbox import run_code

    try:
        res = run_code("print(6 * 7)")
    except MadopdError as exc:
        return Check("sandbox", False, one_line(exc), "bash .ci/setup_sandbox.sh")
    if res.status != "pass" or res.stdout.strip() != "42":
        return Check("sandbox", False, f"a trivial program ended {res.status} ({res.reason})",
                     "bash .ci/setup_sandbox.sh; see docs/sandbox.md")
    if res.isolation != "full":
        return Check("sandbox", False, f"isolation {res.isolation}",
                     "enable user namespaces / cgroups / seccomp (docs/sandbox.md)")
    return Check("sandbox", True, "isolation full (user namespaces, cgroup, seccomp)")


def check_vllm(ctx: Context) -> Check:
    from madopd.models.hf import HFTeacher

    cfg = ctx.config
    if cfg.teacher_backend != "vllm_server":
        return Check("vLLM endpoints", None, f"teacher_backend={cfg.teacher_backend!r}")
    notes, bad = [], []
    for k, t in enumerate(ctx.teachers):
        chats, resp = _scoring_inputs(ctx, k, n=1)
        try:
            served = _dense(t.score(chats, resp, top_k=cfg.score_top_k or 5))
        except MadopdError as exc:
            bad.append(f"{t.name} does not answer: {one_line(exc)}")
            continue
        path = cfg.teachers[k]
        if not Path(path).is_dir():
            notes.append(f"{t.name} answers (no local folder to compare)")
            continue
        ref = HFTeacher(path, device="cpu")
        ids = t.score(chats, resp, top_k=cfg.score_top_k or 5).dists.ids
        full = _dense(ref.score(chats, resp))
        gap = float((full.gather(-1, ids) - served).abs().nan_to_num(0).max())
        notes.append(f"{t.name} |Δ log p| {gap:.3f}")
        if gap > VLLM_TOL:
            bad.append(f"{t.name} differs from HF by {gap:.3f} nats")
    if bad:
        return Check("vLLM endpoints", False, "; ".join(bad + notes),
                     "start the servers (teacher_base_urls) with the same weights and dtype")
    return Check("vLLM endpoints", True, "; ".join(notes))


def checkpoint_bytes(student: Any) -> int:
    """One checkpoint: the weights in their dtype + AdamW's two fp32 moments per trainable one."""
    params = list(student.base_model.parameters())
    weights = sum(p.numel() * p.element_size() for p in params)
    moments = sum(2 * 4 * p.numel() for p in student.model.parameters() if p.requires_grad)
    return weights + moments


def check_disk(ctx: Context) -> Check:
    cfg = ctx.config
    n = (cfg.max_steps // cfg.checkpoint_every if cfg.checkpoint_every else 0) + 1
    if cfg.keep_checkpoints is not None:
        n = min(n, cfg.keep_checkpoints + 1)  # the new one is written before the oldest goes
    need = n * checkpoint_bytes(ctx.student)
    where = ctx.out_dir
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free
    text = f"{n} checkpoint(s) × {checkpoint_bytes(ctx.student) / 2**20:.1f} MiB = " \
           f"{need / 2**20:.1f} MiB; {free / 2**30:.1f} GiB free at {where}"
    if need > free:
        return Check("disk space", False, text,
                     "free space, write elsewhere (--out), or set keep_checkpoints")
    return Check("disk space", True, text)


CHECKS = {  # check -> the name its line carries (also when it cannot run)
    check_tokenizer: "tokenizer", check_chat_eos: "chat template / EOS",
    check_windows: "prompts fit the windows", check_determinism: "teachers score deterministically",
    check_temperature: "scoring temperature", check_zero_loss: "student = teacher gives zero loss",
    check_confidences: "confidence sources", check_cache_key: "debate cache key",
    check_sandbox: "sandbox", check_vllm: "vLLM endpoints", check_disk: "disk space"}


# ------------------------------------------------------------------------ the whole run
def build_context(config: Any, *, task: Any = None, student: Any = None, teachers: Any = None,
                  out_dir: str | Path = "runs") -> Context:
    """Load what the config names (or take the given objects) and draw one batch of samples."""
    from madopd.debate import Debate, DebateProtocol
    from madopd.distill.data import TrainPool
    from madopd.distill.loading import load_student, load_teachers
    from madopd.distill.loop import TEMPLATES_BY_KIND, debate_sampling
    from madopd.tasks import get_task

    cfg = config
    task = task if task is not None else get_task(cfg.task)
    student = student if student is not None else load_student(cfg)
    if teachers is None:
        teachers = [] if cfg.method == "base" else load_teachers(cfg)
    teachers = list(teachers)[: cfg.effective_num_teachers or None]
    pool = TrainPool(task, opad_mode="teacher_forced", batch_size=1, seed=cfg.seed)
    states = [s for s in pool.items if hasattr(s, "messages")]
    debate = None
    if teachers:
        protocol = DebateProtocol(
            rounds=cfg.rounds, templates=TEMPLATES_BY_KIND.get(task.kind, "general"),
            sampling=debate_sampling(cfg), on_missing_confidence=cfg.on_missing,
            confidence_fallback=cfg.confidence_fallback)
        debate = Debate(teachers, protocol, names=cfg.teacher_names[: len(teachers)]
                        if cfg.teacher_names else None)
    if hasattr(student, "eval"):
        student.eval()
    ctx = Context(cfg, task, student, teachers, states, Path(out_dir), debate=debate)
    with torch.no_grad():
        ctx.samples = student.rollout(states[:4], cfg.sampling)
    return ctx


def run_doctor(config: Any, *, task: Any = None, student: Any = None, teachers: Any = None,
               out_dir: str | Path = "runs") -> list[Check]:
    """Every check of the module docstring, in order. Loading failures are one ✗ line."""
    t0 = time.perf_counter()
    try:
        ctx = build_context(config, task=task, student=student, teachers=teachers,
                            out_dir=out_dir)
    except MadopdError as exc:
        return [Check("models and task load", False, one_line(exc),
                      "fix the config's paths and task (the other checks need them)",
                      time.perf_counter() - t0)]
    checks = [Check("models and task load", True,
                    f"student + {len(ctx.teachers)} teacher(s), {len(ctx.states)} training "
                    f"states", "", time.perf_counter() - t0)]
    needs_teachers = {check_determinism, check_temperature, check_vllm}
    for fn, name in CHECKS.items():
        t = time.perf_counter()
        if fn in needs_teachers and not ctx.teachers:
            c = Check(name, None, "no teachers")
        else:
            try:
                c = fn(ctx)
            except MadopdError as exc:  # e.g. a served teacher that does not answer
                c = Check(name, False, one_line(exc),
                          "the check could not run: fix what this error names")
        c.seconds = time.perf_counter() - t
        checks.append(c)
    return checks


def format_checks(checks: list[Check]) -> str:
    """The ✓/✗ table: one line per check, a ``fix:`` line under each ✗."""
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"{_mark(c.ok)} {c.name:<{width}}  {c.detail}")
        if c.ok is False and c.fix:
            lines.append(f"  {'':<{width}}  fix: {c.fix}")
    bad = sum(c.ok is False for c in checks)
    lines.append(f"{sum(c.ok is True for c in checks)} ✓, {bad} ✗, "
                 f"{sum(c.ok is None for c in checks)} not applicable")
    return "\n".join(lines)
