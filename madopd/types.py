"""Plain data types that flow between madopd's steps (design: docs/architecture.md §2).

Only dataclasses and Protocols live here, so every module can import them without cycles.
Shapes use B = batch, T = tokens, V = vocabulary, K = teachers, k = top-k.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

Message = dict[str, str]  # {"role": "system" | "user" | "assistant" | "tool", "content": str}
Chat = list[Message]


@dataclass
class State:
    """One decision point the student acts on (paper: s_m; single-turn tasks: s = x).

    ``messages`` is the chat the student sees (no privileged context). ``reference`` is the
    gold action/answer text when the task knows it (used by MT-SeqKD-free evaluation and by
    debate diagnostics), ``family`` a task-specific skill label (e.g. "add"), ``meta`` anything
    else a verifier or environment needs (episode id, step index, hidden tests...).
    """

    id: str
    messages: Chat
    reference: str | None = None
    family: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def step_state_id(episode_id: str, step: int) -> str:
    """The id of the decision point before action ``step`` of an episode, the one scheme used by
    records (``madopd.opad``), tasks' own step states and reference tables (``"tools/0/621#2"``).

    Episode ids may contain ``/``, so ``#`` separates the step unambiguously."""
    return f"{episode_id}#{int(step)}"


@dataclass
class Sampling:
    """Decoding settings shared by students and teachers (same everywhere for fair baselines)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    max_new_tokens: int = 64
    seed: int | None = None
    greedy: bool = False  # True = argmax decoding, ignores temperature/top_p/top_k


@dataclass
class Samples:
    """Student rollouts for a batch of states (ragged lists; padding happens at scoring time)."""

    prompt_ids: list[list[int]]  # [B][P_b] chat-templated prompt the student saw
    response_ids: list[list[int]]  # [B][T_b] sampled tokens, ending with EOS if it was produced
    texts: list[str]  # [B] decoded responses (special tokens stripped)
    truncated: list[bool] = field(default_factory=list)  # [B] hit max_new_tokens without EOS
    # [B][T_b] log p of each sampled token under the sampler's raw distribution, when the
    # backend reports it (vLLM rollouts: madopd.models.vllm_rollout); None otherwise
    sampler_logprobs: list[list[float]] | None = None


@dataclass
class TopKLogprobs:
    """A sparse teacher distribution at each position: top-k ids and log-probs plus the tail.

    ids:       Long  [B, T, k] (or [N, k]) vocabulary ids, distinct per position
    logprobs:  Float [B, T, k] log p(id) under the full teacher distribution (not renormalised)
    tail_mass: Float [B, T]    1 - Σ exp(logprobs): probability of every id outside the top-k;
               ``None`` means "compute it from logprobs".
    Divergences treat the tail as one extra bucket, which makes k < V a lower bound of the dense
    value (data-processing inequality) and never negative; k = V equals the dense result.
    """

    ids: torch.Tensor
    logprobs: torch.Tensor
    tail_mass: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> TopKLogprobs:
        tail = None if self.tail_mass is None else self.tail_mass.to(device)
        return TopKLogprobs(self.ids.to(device), self.logprobs.to(device), tail)


@dataclass
class AlignedLogprobs:
    """A teacher of another tokenizer scored on the student's tokens (madopd.crosstok).

    The student's response is cut into spans on whose byte boundaries both tokenizations
    agree; ``span_logp`` is the teacher's log-prob of each span (the sum over its own tokens).

    span_id:   Long  [B, T] the span of each student token, -1 = masked (padding, or text
               that did not round-trip through a tokenizer: counted by the aligner)
    span_logp: Float [B, S] log p_teacher(span) (S = most spans in a row; unused entries 0)
    A span of one student token gives that token's teacher log-prob exactly; the student
    tokens of a longer span share its log-prob ratio (``madopd.divergence.sampled``).
    """

    span_id: torch.Tensor
    span_logp: torch.Tensor

    def to(self, device: torch.device | str) -> AlignedLogprobs:
        return AlignedLogprobs(self.span_id.to(device), self.span_logp.to(device))


# A teacher's distributions at the student's response positions: dense logits/log-probs
# [B, T, V] or sparse top-k. Every divergence accepts both.
TeacherDists = "torch.Tensor | TopKLogprobs"


@dataclass
class Scores:
    """What ``Teacher.score`` returns: distributions aligned with the continuation tokens.

    dists: dense log-probs [B, T, V] (T = longest continuation) or TopKLogprobs [B, T, k]
    mask:  Bool [B, T], True where a continuation token exists (False = right padding)
    truncated: [B] True where the context had to be cut to fit the model's window
    """

    dists: torch.Tensor | TopKLogprobs
    mask: torch.Tensor
    truncated: list[bool] = field(default_factory=list)


@runtime_checkable
class Teacher(Protocol):
    """Anything that can argue in a debate and force-decode a student's tokens."""

    name: str

    @property
    def tokenizer(self) -> Any: ...

    def generate(self, chats: list[Chat], sampling: Sampling) -> list[str]:
        """One reply per chat, chat template applied, special tokens stripped."""

    def score(self, contexts: list[Chat], continuation_ids: list[list[int]], *,
              top_k: int | None = None) -> Scores:
        """Force decoding: p(·| context rendered with add_generation_prompt, continuation_<t).

        One forward pass per sequence; logits are kept only at continuation positions.
        ``top_k=None`` returns dense log-probs, an int returns TopKLogprobs.
        """


@dataclass
class DebateMessage:
    """One teacher's turn in one round (paper: h_r^k)."""

    teacher: int  # index k in the teacher list
    round: int  # 1-based round r
    text: str  # raw generated text (untrusted model output)
    answer: str  # text with the confidence tag removed, stripped
    confidence: float | None  # parsed <<CONFIDENCE=N>>, None = missing/unparseable
    failed: bool = False  # the teacher errored in this round and was dropped (counted)
    error: str = ""  # the error text when failed
    # where ``confidence`` came from: "tag" | "forced_tag" | "answer_logprob" (madopd.confidence);
    # None = missing or not recorded (transcripts from before sources existed)
    confidence_source: str | None = None


@dataclass
class Transcript:
    """A whole debate about one state (paper: H_R^m); serialises to JSON and back."""

    state_id: str
    teacher_names: list[str]
    rounds: int
    messages: list[DebateMessage] = field(default_factory=list)

    def turn(self, teacher: int, round: int) -> DebateMessage:
        for m in self.messages:
            if m.teacher == teacher and m.round == round:
                return m
        raise KeyError(f"no message for teacher {teacher} in round {round}")

    def final_confidences(self) -> list[float | None]:
        """Each teacher's confidence in the last round (None where missing; [] when R = 0)."""
        if self.rounds == 0:
            return []
        return [self.turn(k, self.rounds).confidence for k in range(len(self.teacher_names))]

    def final_answers(self) -> list[str]:
        if self.rounds == 0:
            return []
        return [self.turn(k, self.rounds).answer for k in range(len(self.teacher_names))]


@dataclass
class StepRecord:
    """Everything one distillation step produced, for notebooks, widgets and the run store.

    Ragged per-sample lists (b = sample, t = response token, k = teacher). Values are plain
    Python numbers so a record serialises to JSON; RunStore may store arrays more compactly.
    """

    step: int
    loss: float
    metrics: dict[str, float]  # scalars: "loss", "time/rollout", "count/missing_confidence", ...
    teacher_names: list[str]  # [K]
    state_ids: list[str]  # [B]
    prompts: list[str]  # [B] what the student saw (decoded, untrusted)
    responses: list[str]  # [B] student texts (untrusted)
    response_ids: list[list[int]]  # [B][T_b]
    response_tokens: list[list[str]]  # [B][T_b] one decoded string per token
    weights: list[list[float]]  # [B][K] per-sample teacher weights (after missing-tag policy)
    per_token_divergence: list[list[list[float]]]  # [B][T_b][K] D(p_k ‖ q) per token
    per_token_loss: list[list[float]]  # [B][T_b] combined (weighted) per-token loss
    token_weights: list[list[list[float]]] | None = None  # [B][T_b][K] when weighting is per token
    transcripts: list[Transcript | None] = field(default_factory=list)  # [B] None when R = 0
    correct: list[float | None] = field(default_factory=list)  # [B] verifier score of response
    families: list[str | None] = field(default_factory=list)  # [B] task family labels
    # Compact top-k views for the divergence lens, [B][T_b][k]: student and per-teacher ids/logprobs.
    student_topk: dict[str, list] | None = None  # {"ids": [B][T][k], "logprobs": [B][T][k]}
    teacher_topk: list[dict[str, list]] | None = None  # [K] of the same
    skipped: list[bool] = field(default_factory=list)  # [B] sample dropped by a policy (counted)
