"""toy-tools: a multi-step tool-use episode in a deterministic simulated world (the agentic task).

The user asks ``T:<word> <p> <q>`` ("T:most c f" = "the larger of the values of c and f"). The
world holds a hidden two-digit value for each key a..h. Tools (one call per assistant turn):

    get K        -> the value of key K                  (tool message "41")
    OP A B       -> OP applied to numbers A, B, for OP in add sub max min dst
    ans N        -> final answer; ends the episode
    anything else -> tool message "err"

The gold episode is ``get p`` -> ``get q`` -> ``<op> vp vq`` -> ``ans <result>``: results feed the
next call, so an early error compounds (a wrong key gives a wrong number, a wrong operation a wrong
result). The skill-bearing choice is the operation. The oracle is history-dependent and
recovers: after a wrong call it asks for the missing observation or the right operation again.
Metrics: step accuracy (action == oracle's next action in that history) and episode success
(the final ``ans`` equals the true result). An episode ends after ``max_steps`` actions.

OPAD (``madopd.opad``) turns episodes into step-level states; tool results are ``tool`` messages,
never part of a trained response.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from madopd.errors import ConfigError
from madopd.tasks.base import Episode
from madopd.toyworld.toy_common import FAMILIES, KEYS, OPS, VAL_HI, VAL_LO, is_held_out
from madopd.types import Chat, State, step_state_id

_GET = re.compile(r"^get ([a-z])$")
_OP = re.compile(r"^(add|sub|max|min|dst) (-?\d{1,4}) (-?\d{1,4})$")
_ANS = re.compile(r"^ans (-?\d{1,4})$")


def parse_history(history: Chat) -> list[tuple[str, str | None]]:
    """[(action, observation or None)] for the assistant turns after the opening chat."""
    pairs: list[tuple[str, str | None]] = []
    for m in history:
        if m.get("role") == "assistant":
            pairs.append((str(m.get("content", "")).strip(), None))
        elif m.get("role") == "tool" and pairs and pairs[-1][1] is None:
            pairs[-1] = (pairs[-1][0], str(m.get("content", "")))
    return pairs


class ToolWorld:
    """The deterministic simulator (implements ``madopd.tasks.base.Environment``)."""

    def __init__(self, max_steps: int = 6):
        self.max_steps = max_steps

    def execute(self, episode: Episode, action: str) -> tuple[str | None, bool]:
        """The observation for one action (None = the episode ends)."""
        action = action.strip()
        if m := _GET.match(action):
            value = episode.meta["values"].get(m.group(1))
            return (str(value) if value is not None else "err"), False
        if m := _OP.match(action):
            return str(OPS[m.group(1)](int(m.group(2)), int(m.group(3)))), False
        if _ANS.match(action):
            return None, True
        return "err", False

    def step(self, episode: Episode, history: Chat, action: str) -> tuple[str | None, bool]:
        obs, done = self.execute(episode, action)
        n_actions = len(parse_history(history)) + 1
        return obs, done or n_actions >= self.max_steps


def oracle_action(episode: Episode, history: Chat, tool: str) -> str:
    """The next action of a policy that uses operation ``tool`` (the gold one: the family's)."""
    p, q = episode.meta["p"], episode.meta["q"]
    seen: dict[str, int] = {}
    results: dict[str, str] = {}
    for action, obs in parse_history(history):
        if obs is None:
            continue
        if (m := _GET.match(action)) and obs.lstrip("-").isdigit():
            seen[m.group(1)] = int(obs)
        elif _OP.match(action):
            results[action] = obs
    if p not in seen:
        return f"get {p}"
    if q not in seen:
        return f"get {q}"
    call = f"{tool} {seen[p]} {seen[q]}"
    if call not in results:
        return call
    return f"ans {results[call]}"


@dataclass
class ToyToolsTask:
    """The agentic task of the toy world (implements ``madopd.tasks.base.EpisodicTask``)."""

    families: tuple[str, ...] = ("add", "sub", "max", "min", "dst")
    n_train: int = field(default=1500, metadata={"help": "training episodes"})
    n_eval: int = field(default=250, metadata={"help": "held-out episodes (the first n of the fixed held-out side)"})
    max_steps: int = field(default=6, metadata={"help": "actions before an episode is cut off"})
    seed: int = field(default=0, metadata={"help": "world seed (episodes, hidden values)"})
    name: str = "toy-tools"
    kind: str = "agentic"

    def __post_init__(self):
        for f in self.families:
            if f not in FAMILIES:
                raise ConfigError(f"ToyToolsTask.families: unknown family {f!r}; valid: {sorted(FAMILIES)}")
        if self.n_train < 1 or self.n_eval < 1:
            raise ConfigError("ToyToolsTask.n_train and .n_eval must be >= 1")
        if self.max_steps < 4:
            raise ConfigError(f"ToyToolsTask.max_steps must be >= 4 (the gold path), got {self.max_steps}")
        self.environment = ToolWorld(self.max_steps)
        rng = random.Random(self.seed)
        seen, self._train, self._eval = set(), [], []
        # One fixed stream of distinct episodes; ``is_held_out`` (a hash of the episode alone)
        # sends each to its side, and each side keeps its first n. The sides therefore do not
        # depend on n_train / n_eval: a task built with n_eval=1 trains on exactly the episodes a
        # task built with n_eval=250 trains on, and never on one of the latter's held-out ones.
        while len(self._train) < self.n_train or len(self._eval) < self.n_eval:
            ep = self._sample(rng, len(seen))
            sig = self.signature(ep)
            if sig in seen:
                continue
            seen.add(sig)
            side = self._eval if is_held_out("toy-tools", repr(sig)) else self._train
            if len(side) < (self.n_eval if side is self._eval else self.n_train):
                side.append(ep)

    @staticmethod
    def signature(ep: Episode) -> tuple:
        """What makes an episode one item: (family, keys asked, their hidden values)."""
        m = ep.meta
        return (ep.family, m["p"], m["q"], m["values"][m["p"]], m["values"][m["q"]])

    def _sample(self, rng: random.Random, i: int) -> Episode:
        fam = self.families[i % len(self.families)]
        p, q = rng.sample(KEYS, 2)
        values = {k: rng.randint(VAL_LO, VAL_HI) for k in KEYS}
        while values[q] == values[p]:  # distinct operands: max/min answers always differ
            values[q] = rng.randint(VAL_LO, VAL_HI)
        answer = FAMILIES[fam].apply(values[p], values[q])
        ep = Episode(
            id=f"tools/{self.seed}/{i}", family=fam,
            messages=[{"role": "user", "content": f"T:{FAMILIES[fam].word} {p} {q}"}],
            meta={"p": p, "q": q, "values": values, "answer": answer,
                  "u": KEYS.index(p) / len(KEYS), "trap": q == "h"})
        ep.reference_actions = self.gold_actions(ep)
        return ep

    # ----------------------------------------------------------------- episodes and states
    def train_episodes(self) -> list[Episode]:
        return list(self._train)

    def eval_episodes(self) -> list[Episode]:
        return list(self._eval)

    def gold_actions(self, episode: Episode) -> list[str]:
        history = list(episode.messages)
        actions = []
        while True:
            a = oracle_action(episode, history, episode.family)
            actions.append(a)
            obs, done = self.environment.execute(episode, a)
            if done:
                return actions
            history += [{"role": "assistant", "content": a}, {"role": "tool", "content": obs}]

    def state_at(self, episode: Episode, history: Chat, step: int | None = None) -> State:
        """The decision point after ``history`` (teacher-forced or the student's own)."""
        step = len(parse_history(history)) if step is None else step
        return State(
            id=step_state_id(episode.id, step), messages=list(history),
            reference=oracle_action(episode, history, episode.family), family=episode.family,
            meta={**episode.meta, "episode": episode.id, "step": step})

    def states_of(self, episode: Episode) -> list[State]:
        """Teacher-forced step-level states along the gold path (paper §4.4, step-level sampling)."""
        history = list(episode.messages)
        states = []
        for m, a in enumerate(episode.reference_actions or self.gold_actions(episode)):
            states.append(self.state_at(episode, history, m))
            obs, done = self.environment.execute(episode, a)
            if done:
                break
            history += [{"role": "assistant", "content": a}, {"role": "tool", "content": obs}]
        return states

    def train_states(self) -> list[State]:
        return [s for ep in self._train for s in self.states_of(ep)]

    def eval_states(self) -> list[State]:
        return [s for ep in self._eval for s in self.states_of(ep)]

    def episode_of(self, state: State) -> Episode:
        ep_id = state.meta["episode"]
        for ep in (*self._train, *self._eval):
            if ep.id == ep_id:
                return ep
        raise ConfigError(f"state {state.id!r}: episode {ep_id!r} is not in this task")

    @staticmethod
    def answer_with(state: State, tool: str) -> str:
        """The next action of a policy using operation ``tool`` in ``state`` (teachers' beliefs)."""
        ep = Episode(id=state.meta.get("episode", state.id), messages=[], meta=state.meta)
        return oracle_action(ep, state.messages, tool)

    # ----------------------------------------------------------------- metrics
    def verify(self, state: State, response: str) -> float:
        """Step accuracy of one action: 1.0 when it equals the oracle's next action."""
        return 1.0 if (response or "").strip() == state.reference else 0.0

    def verify_batch(self, states: list[State], responses: list[str]) -> list[float]:
        return [self.verify(s, r) for s, r in zip(states, responses)]

    def step_correct(self, episode: Episode, history: Chat, action: str) -> bool:
        return (action or "").strip() == oracle_action(episode, history, episode.family)

    def episode_success(self, episode: Episode, history: Chat) -> bool:
        pairs = parse_history(history)
        if not pairs or not (m := _ANS.match(pairs[-1][0])):
            return False
        return int(m.group(1)) == episode.meta["answer"]

    def run_episode(self, episode: Episode, policy) -> tuple[Chat, list[bool]]:
        """Roll ``policy(history) -> action`` through the world; returns (history, step_correct list)."""
        history, correct = list(episode.messages), []
        while True:
            action = policy(history)
            correct.append(self.step_correct(episode, history, action))
            obs, done = self.environment.step(episode, history, action)
            history.append({"role": "assistant", "content": action})
            if done:
                return history, correct
            history.append({"role": "tool", "content": obs})
