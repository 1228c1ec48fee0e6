"""Task and environment interfaces shared by the toy world, the JSONL loaders and the benchmarks.

A *task* hands out states (decision points) and judges the student's responses. Agentic tasks
also have an *environment*: OPAD (paper §4.4, Eqs. 9–10) steps it with the student's own
actions so later states come from the student's earlier choices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from madopd.types import Chat, State

TaskKind = Literal["agentic", "code", "general"]


@dataclass
class Episode:
    """A multi-turn tool-use episode before any action is taken.

    ``messages`` is the opening chat (system/user turns). ``reference_actions`` are the gold
    actions, one per step, when known (teacher-forced OPAD replays them); ``meta`` carries
    whatever the environment needs (hidden world state, the gold final answer...).
    """

    id: str
    messages: Chat
    reference_actions: list[str] | None = None
    family: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Environment(Protocol):
    """A deterministic simulator of tool results."""

    def step(self, episode: Episode, history: Chat, action: str) -> tuple[str | None, bool]:
        """Apply ``action`` after ``history`` (opening chat + earlier actions/observations).

        Returns ``(observation, done)``: the tool result to append as a ``tool`` message
        (None when the action ends the episode), and whether the episode is over.
        """


@runtime_checkable
class Task(Protocol):
    """What the distillation loop and the evaluators need from a task."""

    name: str
    kind: TaskKind

    def train_states(self) -> list[State]:
        """The prompt pool the student practises on (single-turn tasks: one state per prompt)."""

    def eval_states(self) -> list[State]:
        """Held-out states (never in train_states)."""

    def verify(self, state: State, response: str) -> float:
        """Score one response in [0, 1] (1 = correct). Must never raise on model output."""


@runtime_checkable
class EpisodicTask(Task, Protocol):
    """An agentic task: episodes stepped through an environment."""

    environment: Environment

    def train_episodes(self) -> list[Episode]: ...

    def eval_episodes(self) -> list[Episode]: ...

    def step_correct(self, episode: Episode, history: Chat, action: str) -> bool:
        """Whether ``action`` is the right next action in this history (step accuracy)."""

    def episode_success(self, episode: Episode, history: Chat) -> bool:
        """Whether a finished episode reached the right final answer."""
