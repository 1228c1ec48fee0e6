"""OPAD — on-policy agentic distillation (paper §4.4, Eqs. 9-10) as step-level states.

A multi-turn episode becomes one ``State`` per decision point m (paper's step-level sampling):
``state.messages`` = opening chat + earlier actions (assistant) + observations (tool). The
student's action a_m is the response the loss is computed on; tool results live only in the
prompt context, never in response ids, so they are masked out of the loss by construction.

Two modes (``DistillConfig.opad_mode``):

* ``teacher_forced`` (the official code's default): earlier actions are the episode's reference
  actions, observations come from the environment. States do not depend on the student, so the
  debate about each state can be cached.
* ``full``: the student acts turn after turn and a real ``Environment`` answers, so later states
  come from the student's own earlier actions (Eqs. 9-10 as written).

Loss mapping. Eq. 9 is a token mean over one action; Eq. 10 sums Eq. 9 over the M steps of a
trajectory. We train on step-states sampled uniformly (``GroupedSampler``): with
``loss_normalization="sequence"`` the batch loss is the mean of per-step token means, whose
expectation is E_x[Σ_m L(s_m)] · (#episodes / #steps) — Eq. 10 up to a constant factor that
only rescales the learning rate. With the default ``"token"`` normalisation every action token
weighs the same (Σ tokens / #tokens), the usual choice for stable gradient accumulation.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field, replace
from typing import Any

from madopd.errors import ConfigError, DataError
from madopd.tasks.base import Environment, Episode
from madopd.types import Chat, Message, Samples, Sampling, State, step_state_id


def derive_seed(*parts: Any) -> int:
    """A stable 31-bit seed from any printable parts (independent of Python's hash salt)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def env_step_messages(environment: Environment, episode: Episode, history: Chat,
                      action: str) -> tuple[list[Message], bool]:
    """Messages to append after ``action`` (observations), and whether the episode is over.

    Environments may implement ``step_messages(episode, history, action)`` to return several
    messages (e.g. a replayed dialogue's next user turn); otherwise ``step``'s observation
    becomes one ``tool`` message (none when it is None).
    """
    if hasattr(environment, "step_messages"):
        msgs, done = environment.step_messages(episode, history, action)
        return [dict(m) for m in msgs], bool(done)
    obs, done = environment.step(episode, history, action)
    return ([] if obs is None else [{"role": "tool", "content": str(obs)}]), bool(done)


def step_state(episode: Episode, history: Chat, m: int, mode: str) -> State:
    """The decision point before action m (history is copied so later steps cannot change it)."""
    refs = episode.reference_actions or []
    return State(
        id=step_state_id(episode.id, m), messages=[dict(x) for x in history],
        reference=refs[m] if m < len(refs) else None, family=episode.family,
        meta={"episode_id": episode.id, "step": m, "opad_mode": mode,
              "num_reference_steps": len(refs)})


def teacher_forced_states(episode: Episode, environment: Environment) -> list[State]:
    """One state per reference action; earlier actions are the references (official default)."""
    refs = episode.reference_actions
    if not refs:
        raise DataError("teacher-forced OPAD needs reference actions", path=episode.id,
                        field="reference_actions")
    history: Chat = [dict(x) for x in episode.messages]
    states = []
    for m, action in enumerate(refs):
        states.append(step_state(episode, history, m, "teacher_forced"))
        observations, done = env_step_messages(environment, episode, history, action)
        history = history + [{"role": "assistant", "content": action}] + observations
        if done and m < len(refs) - 1:
            raise DataError(f"the environment ended the episode after step {m} but the reference "
                            f"has {len(refs)} actions", path=episode.id, field="reference_actions")
    return states


@dataclass
class EpisodeRollout:
    """One full on-policy episode: the final history, the student's actions and step states.

    ``samples`` holds the student's prompt/response ids for every step (so the loop can train
    on exactly the tokens the student produced); ``done`` is False when max_steps cut it short.
    """

    episode: Episode
    history: Chat
    actions: list[str] = field(default_factory=list)
    states: list[State] = field(default_factory=list)
    prompt_ids: list[list[int]] = field(default_factory=list)
    response_ids: list[list[int]] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)
    done: bool = False

    def samples(self) -> Samples:
        return Samples(self.prompt_ids, self.response_ids, list(self.actions), list(self.truncated))


def rollout_episodes(student: Any, episodes: list[Episode], environment: Environment,
                     sampling: Sampling, max_steps: int,
                     counters: dict[str, float] | None = None) -> list[EpisodeRollout]:
    """Full on-policy rollouts, batched in lockstep across episodes (paper Eqs. 9-10).

    At step m every unfinished episode's state is sampled by the student in one batch; the
    environment answers each action. Counters: ``count/episode_truncated`` (max_steps reached
    without the environment ending the episode) and any counters the environment keeps
    (``environment.counters``, e.g. ``replay_mismatch``) as deltas under ``count/``.
    """
    if max_steps < 1:
        raise ConfigError(f"max_steps must be >= 1, got {max_steps}")
    before = dict(getattr(environment, "counters", {}) or {})
    runs = [EpisodeRollout(ep, [dict(x) for x in ep.messages]) for ep in episodes]
    for m in range(max_steps):
        active = [r for r in runs if not r.done]
        if not active:
            break
        states = [step_state(r.episode, r.history, m, "full") for r in active]
        s = sampling if sampling.seed is None else replace(
            sampling, seed=derive_seed(sampling.seed, "opad-step", m))
        samples = student.rollout(states, s)
        for i, r in enumerate(active):
            action = samples.texts[i]
            r.states.append(states[i])
            r.actions.append(action)
            r.prompt_ids.append(list(samples.prompt_ids[i]))
            r.response_ids.append(list(samples.response_ids[i]))
            r.truncated.append(bool(samples.truncated[i]) if samples.truncated else False)
            observations, done = env_step_messages(environment, r.episode, r.history, action)
            r.history = r.history + [{"role": "assistant", "content": action}] + observations
            r.done = done
    if counters is not None:
        counters["count/episode_truncated"] = counters.get("count/episode_truncated", 0) + sum(
            not r.done for r in runs)
        after = dict(getattr(environment, "counters", {}) or {})
        for key, value in after.items():
            delta = value - before.get(key, 0)
            if delta:
                counters[f"count/{key}"] = counters.get(f"count/{key}", 0) + delta
    return runs


def rollout_episode(student: Any, task: Any, episode: Episode, sampling: Sampling,
                    max_steps: int) -> tuple[Chat, list[str], list[State]]:
    """One full on-policy episode through ``task.environment``: (history, actions, states)."""
    r = rollout_episodes(student, [episode], task.environment, sampling, max_steps)[0]
    return r.history, r.actions, r.states


def episode_states(task: Any, episode: Episode, mode: str = "teacher_forced", *,
                   student: Any = None, sampling: Sampling | None = None,
                   max_steps: int = 10) -> list[State]:
    """Step-level states of one episode in either mode (full mode needs a student)."""
    if mode == "teacher_forced":
        return teacher_forced_states(episode, task.environment)
    if mode == "full":
        if student is None:
            raise ConfigError("episode_states(mode='full') needs the student that acts")
        return rollout_episode(student, task, episode, sampling or Sampling(), max_steps)[2]
    raise ConfigError(f"mode must be 'teacher_forced' or 'full', got {mode!r}")


class GroupedSampler:
    """Batches of item indices that keep each group's items together and in order.

    Each epoch shuffles the groups (seeded by ``seed`` + epoch) and packs whole groups into
    batches of at most ``batch_size`` items; a group longer than a batch fills consecutive
    batches. Single-turn tasks use singleton groups (a plain shuffled sampler). With several
    processes, process ``rank`` takes every ``world_size``-th batch, so the data order does not
    depend on the number of micro-batches per step. ``state_dict`` makes the order resumable.
    """

    def __init__(self, groups: list[list[int]], batch_size: int, *, seed: int = 0,
                 shuffle: bool = True, rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.groups = [list(g) for g in groups if g]
        if not self.groups:
            raise DataError("the sampler got no items (empty dataset?)")
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch, self.pos = 0, 0
        self._batches = self._epoch_batches(0)

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        order = list(range(len(self.groups)))
        if self.shuffle:
            random.Random(derive_seed(self.seed, "epoch", epoch)).shuffle(order)
        batches, cur = [], []
        for gi in order:
            g = self.groups[gi]
            if cur and len(cur) + len(g) > self.batch_size:
                batches.append(cur)
                cur = []
            while len(g) > self.batch_size:  # a long group spans consecutive batches
                batches.append(g[: self.batch_size])
                g = g[self.batch_size:]
            cur = cur + g
        if cur:
            batches.append(cur)
        return batches

    def next_batch(self) -> list[int]:
        idx = self.pos * self.world_size + self.rank
        if idx >= len(self._batches):
            self.epoch += 1
            self.pos = 0
            self._batches = self._epoch_batches(self.epoch)
            idx = self.rank % len(self._batches)
        self.pos += 1
        return list(self._batches[idx])

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed = int(state["seed"])
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._batches = self._epoch_batches(self.epoch)
