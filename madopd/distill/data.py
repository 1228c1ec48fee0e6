"""Where a step's states come from: single-turn prompts, OPAD step-states or whole episodes.

``TrainPool`` hides the three cases behind ``next_batch()`` so the loop does not care:

* single-turn task: states = ``task.train_states()``, singleton groups;
* episodic task, teacher-forced OPAD: one state per reference action, grouped by episode;
* episodic task, full OPAD: items are episodes; the loop rolls them out (Eqs. 9-10).
"""

from __future__ import annotations

from typing import Any

from madopd.errors import ConfigError, DataError
from madopd.opad import GroupedSampler, teacher_forced_states


def is_episodic(task: Any) -> bool:
    return hasattr(task, "train_episodes") and hasattr(task, "environment")


class TrainPool:
    """The training items of a task and a resumable, seeded, grouped sampler over them."""

    def __init__(self, task: Any, *, opad_mode: str, batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1):
        self.episodic = is_episodic(task)
        self.full = self.episodic and opad_mode == "full"
        if self.full:
            self.items = list(task.train_episodes())
            groups = [[i] for i in range(len(self.items))]
        elif self.episodic:
            self.items, groups = [], []
            for ep in task.train_episodes():
                states = teacher_forced_states(ep, task.environment)
                groups.append(list(range(len(self.items), len(self.items) + len(states))))
                self.items.extend(states)
        else:
            self.items = list(task.train_states())
            groups = [[i] for i in range(len(self.items))]
        if not self.items:
            raise DataError(f"task {getattr(task, 'name', task)!r} has no training "
                            f"{'episodes' if self.episodic else 'states'}")
        if not self.episodic and opad_mode == "full":
            pass  # opad_mode only matters for episodic tasks
        self.sampler = GroupedSampler(groups, batch_size, seed=seed, rank=rank,
                                      world_size=world_size)

    def next_batch(self) -> list[Any]:
        return [self.items[i] for i in self.sampler.next_batch()]

    def state_dict(self) -> dict[str, int]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.load_state_dict(state)


def check_pool_config(pool: TrainPool, on_policy_fraction: float) -> None:
    if pool.full and on_policy_fraction < 1.0:
        raise ConfigError("on_policy_fraction < 1 (teacher-generated responses) is not defined for "
                          "opad_mode='full'; use opad_mode='teacher_forced'")
