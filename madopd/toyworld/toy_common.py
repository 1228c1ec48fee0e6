"""The toy world's shared pieces: skill families, teacher skill specs, the oracle and the formats.

Both toy tasks (``toy_tools``: multi-step tool use, ``toy_code``: one-line programs) draw their
items from the same *skill families*. A family is an operation on two numbers that the user names
with a word ("most" = the larger); the skill-bearing choice is which operation to use:

| family | word  | tool | code          | a teacher that lacks the skill uses |
|--------|-------|------|---------------|-------------------------------------|
| add    | sum   | add  | ``x+C``       | sub  (a swapped operation, never noise) |
| sub    | diff  | sub  | ``x-C``       | add |
| max    | most  | max  | ``max(x,C)``  | min |
| min    | least | min  | ``min(x,C)``  | max |
| dst    | gap   | dst  | ``abs(x-C)``  | add |

Outside its skills a teacher answers *plausibly but wrongly* (the swapped operation), which is
what makes naive teacher averaging harmful and a debate useful (toy-world-prototype.md, lesson 1).

Which items a teacher knows is decided by a visible *item position* ``u`` in [0, 1) (code: from the
constant, tools: from the first key), so a tiny model can learn "I know this half of dst". A
*trap* item (code: constant ending in 7; tools: second key ``h``) is where a teacher listed in
``confident_wrong`` answers wrongly *with high confidence* (the debate cannot settle it).

Debate formats (``TOY_TEMPLATES``) are deliberately tiny strings: tokens are training time.
A teacher's debate turn is ``ANSWER<<CONFIDENCE=N>>``; its force-decoding answer (score cues)
is ``ANSWER`` alone, so its distribution at the student's last token predicts ``<|end|>``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from madopd.errors import ConfigError

KEYS = "abcdefgh"  # tool-world variable names
VAL_LO, VAL_HI = 10, 99  # every number in the world has two digits (inclusive range)
CONF_KNOW, CONF_ADOPT, CONF_UNSURE = 90, 70, 20  # round-1 know / round-2 adopted / don't know
ADOPT_THRESHOLD = 50  # a peer is worth adopting when its stated confidence is >= this


@dataclass(frozen=True)
class Family:
    name: str
    word: str  # what the user writes
    tool: str  # tool name in toy-tools
    wrong: str  # family whose operation a teacher without the skill uses instead

    def apply(self, a: int, b: int) -> int:
        return OPS[self.tool](a, b)

    def code(self, c: int) -> str:
        return CODE[self.tool].format(c=c)


OPS = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "max": max,
    "min": min,
    "dst": lambda a, b: abs(a - b),
}
CODE = {"add": "x+{c}", "sub": "x-{c}", "max": "max(x,{c})", "min": "min(x,{c})", "dst": "abs(x-{c})"}

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("add", "sum", "add", "sub"),
        Family("sub", "diff", "sub", "add"),
        Family("max", "most", "max", "min"),
        Family("min", "least", "min", "max"),
        Family("dst", "gap", "dst", "add"),
    )
}
WORD_TO_FAMILY = {f.word: f.name for f in FAMILIES.values()}

# Boilerplate merged into single tokens (TinySpec.merged_tokens): ~2.7x faster training.
MERGED_TOKENS = (
    "<<CONFIDENCE=", ">>", "T:", "C:", "#1", "#2", "#S",
    "get ", "ans ", "add ", "sub ", "max ", "min ", "dst ",
    "max(x,", "min(x,", "abs(x-", "sum ", "diff ", "most ", "least ", "gap ",
)


# --------------------------------------------------------------------------- debate templates

def toy_templates():
    """The toy world's compact ``madopd.debate.DebateTemplates`` (imported lazily)."""
    from madopd.debate import DebateTemplates

    return DebateTemplates(**TOY_TEMPLATE_FIELDS)


# round 1 "#1"; revise "#2{peers}"; score "#S{peers}"; score_blind "#S". A turn renders as its raw
# text ("ANSWER<<CONFIDENCE=N>>"); Debate joins several peers with a blank line. The teacher's own
# last answer is left out on purpose: a toy teacher re-derives it from the state (it is the same
# model), and every token costs training time.
TOY_TEMPLATE_FIELDS = dict(
    system="",
    round1="#1",
    revise="#2{peers_last}",
    score="#S{peers_last}",
    score_blind="#S",
    turn="{text}",
)


def confidence_tag(conf: int) -> str:
    return f"<<CONFIDENCE={int(conf)}>>"


# --------------------------------------------------------------------------- skills

@dataclass(frozen=True)
class TeacherSkill:
    """What one toy teacher knows (the zoo trains a model to behave exactly like this).

    known: family -> [lo, hi) interval of item positions u it knows (missing = knows nothing).
    confident_wrong: families where it answers *trap* items wrongly with confidence CONF_KNOW.
    stubborn: families where it never adopts a peer's answer in revision rounds.
    calibration: "calibrated" (conf 90 iff it knows), "overconfident" (always 90),
                 "underconfident" (always 20).
    """

    name: str
    known: dict[str, tuple[float, float]] = field(default_factory=dict)
    confident_wrong: tuple[str, ...] = ()
    stubborn: tuple[str, ...] = ()
    calibration: str = "calibrated"

    def __post_init__(self):
        if self.calibration not in ("calibrated", "overconfident", "underconfident"):
            raise ConfigError(
                f"TeacherSkill.calibration: expected calibrated|overconfident|underconfident, "
                f"got {self.calibration!r}")
        for fam, (lo, hi) in self.known.items():
            if fam not in FAMILIES:
                raise ConfigError(f"TeacherSkill.known: unknown family {fam!r}; valid: {sorted(FAMILIES)}")
            if not 0.0 <= lo <= hi <= 1.0:
                raise ConfigError(f"TeacherSkill.known[{fam!r}]: need 0 <= lo <= hi <= 1, got {(lo, hi)}")
        for fam in (*self.confident_wrong, *self.stubborn):
            if fam not in FAMILIES:
                raise ConfigError(f"TeacherSkill: unknown family {fam!r}; valid: {sorted(FAMILIES)}")

    def knows(self, family: str, u: float) -> bool:
        lo, hi = self.known.get(family, (0.0, 0.0))
        return lo <= u < hi

    def belief(self, family: str, u: float, trap: bool) -> tuple[str, bool]:
        """(operation the teacher uses, whether it *believes* it knows)."""
        if self.knows(family, u):
            if trap and family in self.confident_wrong:
                return FAMILIES[family].wrong, True  # confidently wrong
            return FAMILIES[family].tool, True
        return FAMILIES[family].wrong, False

    def confidence(self, believes: bool) -> int:
        if self.calibration == "overconfident":
            return CONF_KNOW
        if self.calibration == "underconfident":
            return CONF_UNSURE
        return CONF_KNOW if believes else CONF_UNSURE


def world_skills(kind: str = "default", n_teachers: int = 2, overlap: float = 0.0,
                 calibration: str = "calibrated") -> list[TeacherSkill]:
    """The named teacher line-ups.

    default: complementary domains (K = 2: A = {add, sub}, B = {max, min}; K = 3 splits the
      four families in chunks), dst known by each teacher on its own slice of items, everyone
      stubborn on dst (so disagreement survives the debate and confidence has to arbitrate),
      teacher A confidently wrong on add traps.
    blind: the control world: every teacher knows {add, sub} and the same half of dst, nothing
      else (a shared blind spot), so neither a debate nor confidence weights can recover the rest.
    ``overlap`` in [0, 1]: each teacher also knows the first ``overlap`` share of the items in
    the families outside its domain.
    """
    if kind not in ("default", "blind"):
        raise ConfigError(f"world kind: expected 'default' or 'blind', got {kind!r}")
    if n_teachers not in (2, 3):
        raise ConfigError(f"n_teachers: expected 2 or 3, got {n_teachers}")
    if not 0.0 <= overlap <= 1.0:
        raise ConfigError(f"overlap: expected a value in [0, 1], got {overlap}")
    main = ["add", "sub", "max", "min"]
    if kind == "default":
        chunks = [main[i * len(main) // n_teachers:(i + 1) * len(main) // n_teachers]
                  for i in range(n_teachers)]
    else:
        chunks = [["add", "sub"] for _ in range(n_teachers)]
    skills = []
    for k, dom in enumerate(chunks):
        known = {f: ((0.0, 1.0) if f in dom else (0.0, overlap)) for f in main}
        # dst: complementary slices by default; the same slice for everyone in the blind world
        known["dst"] = (k / n_teachers, (k + 1) / n_teachers) if kind == "default" else (0.0, 0.5)
        skills.append(TeacherSkill(
            name="ABC"[k], known=known,
            confident_wrong=("add",) if (k == 0 and kind == "default") else (),
            stubborn=("dst",), calibration=calibration))
    return skills


# --------------------------------------------------------------------------- debate turns

_TURN = re.compile(r"^(.*?)<<CONFIDENCE=(\d+)>>$")


def parse_turn(text: str) -> tuple[str, int | None]:
    """Split a toy debate turn ``ANSWER<<CONFIDENCE=N>>`` (None = no readable tag)."""
    m = _TURN.match(text.strip())
    if not m:
        return text.strip(), None
    return m.group(1).strip(), int(m.group(2))


def revise(own: tuple[str, int | None], peers: list[tuple[str, int | None]],
           stubborn: bool) -> tuple[str, int]:
    """The revision rule every toy teacher follows (rounds >= 2 and transcript scoring).

    Keep a confident own answer; otherwise adopt the most confident peer (first on ties) if its
    confidence reaches ADOPT_THRESHOLD, unless stubborn; otherwise keep the own answer.
    """
    ans, conf = own
    conf = CONF_UNSURE if conf is None else conf
    if conf >= ADOPT_THRESHOLD or stubborn:
        return ans, conf
    best = None
    for p_ans, p_conf in peers:
        if p_conf is not None and p_conf >= ADOPT_THRESHOLD and (best is None or p_conf > best[1]):
            best = (p_ans, p_conf)
    if best is not None:
        return best[0], CONF_ADOPT
    return ans, conf


def stable_hash(text: str) -> int:
    """A process-independent hash (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


# The toy world's ONE split rule: each task's item space is cut once, by a hash of the item alone.
# A caller that asks for n items takes the first n of a side, so a run that asks for 1 held-out
# episode (zoo training) and one that asks for 250 (the demo) see the same sides (issue 13.1).
EVAL_FRACTION = {"toy-tools": 0.2, "toy-code": 0.3}


def is_held_out(task: str, item_key: str) -> bool:
    """True when the item named ``item_key`` belongs to ``task``'s held-out side.

    Depends only on (task, item); never on how many items a caller wants, nor on any seed.
    """
    if task not in EVAL_FRACTION:
        raise ConfigError(f"is_held_out: unknown toy task {task!r}; valid: {sorted(EVAL_FRACTION)}")
    return stable_hash(f"{task}:{item_key}") % 10_000 < int(10_000 * EVAL_FRACTION[task])
