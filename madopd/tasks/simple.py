"""Small generic in-memory tasks for tests, notebooks and users with their own data.

``SimpleTask`` is a single-turn task built from ``(prompt, reference)`` pairs (or States);
``SimpleEpisodicTask`` is a multi-turn task built from Episodes and any Environment. Both
implement ``madopd.tasks.base.Task`` / ``EpisodicTask``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from madopd.errors import ConfigError, DataError
from madopd.tasks.base import Environment, Episode, TaskKind
from madopd.tasks.steps import teacher_forced_states
from madopd.types import Chat, State


def normalize_text(text: str) -> str:
    """Whitespace-collapsed, stripped text: the exact-match comparison used by default."""
    return " ".join(str(text).split())


def exact_match(state: State, response: str) -> float:
    """1.0 when the response equals the state's reference (whitespace-normalised), else 0.0."""
    if state.reference is None:
        return 0.0
    return float(normalize_text(response) == normalize_text(state.reference))


def _to_states(items: Sequence[Any], split: str, system: str | None) -> list[State]:
    states = []
    for i, item in enumerate(items):
        if isinstance(item, State):
            states.append(item)
            continue
        if isinstance(item, dict):
            prompt, ref = item.get("prompt"), item.get("reference")
            family = item.get("family")
        elif isinstance(item, (tuple, list)) and len(item) in (2, 3):
            prompt, ref = item[0], item[1]
            family = item[2] if len(item) == 3 else None
        else:
            raise DataError(f"expected a State, a (prompt, reference[, family]) pair or a dict, "
                            f"got {type(item).__name__}", path=split, line=i)
        if not isinstance(prompt, str) or not prompt:
            raise DataError("prompt must be a non-empty string", path=split, line=i, field="prompt")
        messages: Chat = ([{"role": "system", "content": system}] if system else [])
        messages.append({"role": "user", "content": prompt})
        states.append(State(id=f"{split}-{i}", messages=messages, reference=ref, family=family))
    return states


class SimpleTask:
    """A single-turn task from lists of (prompt, reference[, family]) pairs, dicts or States.

    ``verify`` defaults to whitespace-normalised exact match against the reference; pass any
    ``verify(state, response) -> float`` instead. It must never raise on model output: an
    exception in a custom verifier is counted in ``counters["verify_errors"]`` and scores 0.
    """

    def __init__(self, train: Sequence[Any], eval: Sequence[Any] = (), *, name: str = "simple",
                 kind: TaskKind = "general", system: str | None = None,
                 verify: Callable[[State, str], float] | None = None):
        if kind not in ("agentic", "code", "general"):
            raise ConfigError(f"kind must be 'agentic', 'code' or 'general', got {kind!r}")
        self.name, self.kind = name, kind
        self._train = _to_states(train, "train", system)
        self._eval = _to_states(eval, "eval", system)
        if not self._train:
            raise DataError("the training set is empty", path="train")
        self._verify = verify or exact_match
        self.counters = {"verify_errors": 0}

    def train_states(self) -> list[State]:
        return list(self._train)

    def eval_states(self) -> list[State]:
        return list(self._eval)

    def verify(self, state: State, response: str) -> float:
        try:
            return float(self._verify(state, response))
        except Exception:  # untrusted output must never crash training; counted
            self.counters["verify_errors"] += 1
            return 0.0


def actions_in(history: Chat, episode: Episode) -> list[str]:
    """The assistant actions taken so far: assistant messages after the opening chat."""
    return [m["content"] for m in history[len(episode.messages):] if m.get("role") == "assistant"]


class SimpleEpisodicTask:
    """A multi-turn task from Episodes (with reference actions) and an Environment.

    Step accuracy compares an action with the episode's reference action at that step
    (whitespace-normalised exact match); an episode succeeds when the student took exactly
    the reference actions. Override by passing ``step_correct`` / ``episode_success``.
    """

    def __init__(self, train: Sequence[Episode], eval: Sequence[Episode] = (), *,
                 environment: Environment, name: str = "simple-episodic",
                 kind: TaskKind = "agentic",
                 step_correct: Callable[[Episode, Chat, str], bool] | None = None,
                 episode_success: Callable[[Episode, Chat], bool] | None = None):
        self.name, self.kind, self.environment = name, kind, environment
        self._train, self._eval = list(train), list(eval)
        if not self._train:
            raise DataError("the training set has no episodes", path="train")
        for split, eps in (("train", self._train), ("eval", self._eval)):
            for i, ep in enumerate(eps):
                if not isinstance(ep, Episode):
                    raise DataError(f"expected an Episode, got {type(ep).__name__}", path=split, line=i)
        self._step_correct = step_correct
        self._episode_success = episode_success

    def train_episodes(self) -> list[Episode]:
        return list(self._train)

    def eval_episodes(self) -> list[Episode]:
        return list(self._eval)

    def train_states(self) -> list[State]:
        return [s for ep in self._train for s in teacher_forced_states(ep, self.environment)]

    def eval_states(self) -> list[State]:
        return [s for ep in self._eval for s in teacher_forced_states(ep, self.environment)]

    def verify(self, state: State, response: str) -> float:
        return exact_match(state, response)

    def step_correct(self, episode: Episode, history: Chat, action: str) -> bool:
        if self._step_correct is not None:
            return bool(self._step_correct(episode, history, action))
        m = len(actions_in(history, episode))
        refs = episode.reference_actions or []
        return m < len(refs) and normalize_text(action) == normalize_text(refs[m])

    def episode_success(self, episode: Episode, history: Chat) -> bool:
        if self._episode_success is not None:
            return bool(self._episode_success(episode, history))
        acts = [normalize_text(a) for a in actions_in(history, episode)]
        return acts == [normalize_text(a) for a in (episode.reference_actions or [])]
