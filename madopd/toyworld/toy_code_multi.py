"""toy-code-multi: the code task with several correct programs per spec (issue 13, item 7).

The paper argues reverse KL suits code because a spec admits several valid implementations: a
teacher spreads its mass over them, and a student fitted by a mass-covering divergence (forward
KL, JSD) averages the modes, which for programs means *invalid hybrids*, while reverse KL commits
to one (paper §3, Remark 1). The single-form toy-code world cannot test that. Here every
(family, C) spec has 2-3 surface forms that all pass the hidden tests:

| family | forms                        |
|--------|------------------------------|
| add    | ``x+C``, ``C+x``, ``x--C``   |
| sub    | ``x-C``, ``-C+x``, ``x+-C``  |
| max    | ``max(x,C)``, ``max(C,x)``   |
| min    | ``min(x,C)``, ``min(C,x)``   |
| dst    | ``abs(x-C)``, ``abs(C-x)``   |

Form 0 is toy-code's canonical answer. The forms differ at (or within two tokens of) the first
token, so a student picks the form early, and every splice ``a[:i] + b[j:]`` of two forms of a
spec that is not itself a form fails the hidden tests (``hybrids``; tests/tasks check it in the
sandbox). Items, hidden tests, grammar and the held-out split are toy-code's
(``toy_common.is_held_out("toy-code", ...)``): the two worlds hold out the same specs.

``answer_with(state, op)`` is the only behavioural difference for the zoo's training data: with
a ``form_seed`` it returns a form drawn uniformly at random (so teachers and the Base student are
trained to spread their mass evenly over the forms), without one the canonical form.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from madopd.toyworld.toy_code import ToyCodeTask
from madopd.toyworld.toy_common import FAMILIES
from madopd.types import State

FORMS: dict[str, tuple[str, ...]] = {
    "add": ("x+{c}", "{c}+x", "x--{c}"),
    "sub": ("x-{c}", "-{c}+x", "x+-{c}"),
    "max": ("max(x,{c})", "max({c},x)"),
    "min": ("min(x,{c})", "min({c},x)"),
    "dst": ("abs(x-{c})", "abs({c}-x)"),
}
N_FORMS_MAX = max(len(v) for v in FORMS.values())
# what a response is, in order of precedence (classify)
CLASSES = ("form", "other_pass", "wrong_op", "hybrid", "other_fail")


def forms_of(family: str, c: int) -> list[str]:
    """Every correct surface form of spec (family, C), canonical (toy-code's answer) first."""
    return [f.format(c=c) for f in FORMS[family]]


def hybrids(family: str, c: int) -> set[str]:
    """Splices ``a[:i] + b[i:]`` (0 < i < len(a)) of two different forms of the spec that are not
    themselves one of its forms: "start like one form, finish like the other" at the same
    position, what a student that mixes the modes' next-token distributions writes.
    (Splices at different cut points also give valid programs, e.g. ``max(x,C,x)``, so they are
    not hybrids by construction; ``classify`` checks passing first anyway.)"""
    forms = forms_of(family, c)
    out = {a[:i] + b[i:] for a in forms for b in forms if a != b for i in range(1, len(a))}
    return out - set(forms)


@dataclass
class ToyCodeMultiTask(ToyCodeTask):
    """toy-code with several correct forms per spec (implements ``madopd.tasks.base.Task``).

    ``state.meta["forms"]`` lists the forms (``reference`` stays the canonical one);
    ``meta["wrong_forms"]`` maps every other family's forms (what a teacher without the skill
    writes). Verification is toy-code's sandboxed verifier, unchanged.
    """

    form_seed: int | None = field(default=None, metadata={
        "help": "None: answer_with gives the canonical form; an int: a uniformly random form "
                "(training data of the multi-mode zoo)"})
    name: str = "toy-code-multi"

    def __post_init__(self):
        super().__post_init__()
        self._rng = random.Random(self.form_seed) if self.form_seed is not None else None

    @staticmethod
    def make_state(family: str, c: int) -> State:
        st = ToyCodeTask.make_state(family, c)
        st.id = f"code-multi/{family}/{c}"
        st.meta["forms"] = forms_of(family, c)
        return st

    def answer_with(self, state: State, tool: str) -> str:  # type: ignore[override]
        """A correct program of operation ``tool`` for this state's constant (random form when
        the task has a ``form_seed``, else the canonical one)."""
        forms = forms_of(FAMILIES[tool].name, state.meta["c"])
        return self._rng.choice(forms) if self._rng is not None else forms[0]

    # ----------------------------------------------------------------- analysis
    @staticmethod
    def form_index(state: State, response: str) -> int | None:
        """Index of ``response`` among the state's forms (exact text after strip), else None."""
        try:
            return state.meta["forms"].index((response or "").strip())
        except ValueError:
            return None

    @staticmethod
    def canonical(state: State, response: str) -> str:
        """The family's canonical program when ``response`` is any form of any family at this
        constant (so oracle comparisons ignore the surface form), else the stripped response."""
        text = (response or "").strip()
        for fam in FORMS:
            if text in forms_of(fam, state.meta["c"]):
                return forms_of(fam, state.meta["c"])[0]
        return text

    def classify(self, state: State, response: str, passed: bool) -> str:
        """One of CLASSES: a listed form / another passing program / a form of a wrong family /
        a hybrid of two forms (fails by construction) / any other failure."""
        text = (response or "").strip()
        if self.form_index(state, text) is not None:
            return "form"
        if passed:
            return "other_pass"
        c = state.meta["c"]
        if any(text in forms_of(f, c) for f in FORMS if f != state.family):
            return "wrong_op"
        if text in hybrids(state.family, c):
            return "hybrid"
        return "other_fail"
