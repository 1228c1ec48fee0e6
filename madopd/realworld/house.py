"""house-calls: function calling with house conventions the prompt never states (issue 22, item 2).

The mechanism, plainly: eight functions, each with one free argument whose *value format* is a
house convention that the spec and the request do not give. Group ``time`` (teacher A's skill)
and group ``names`` (teacher B's skill) hold four functions each:

=================  ==================================  ===============================
function           the request says                    the house call writes
=================  ==================================  ===============================
set_timer          "a timer for 45 minutes"            duration="PT45M" (ISO 8601)
set_alarm          "wake me at 7:05 pm"                time="19:05" (24 h, zero-padded)
schedule_meeting   "a meeting on March 14"             date="2026-03-14" (house year)
remind_me          "remind me in 90 minutes"           seconds=5400 (an int of seconds)
get_weather        "the weather in New York"           city="new_york" (lower, _)
get_stock_price    "ZQX on the Nasdaq"                 ticker="NASDAQ:ZQX"
send_message       "message Maria"                     to="@maria"
set_volume         "volume to 45 percent"              level=0.45 (a fraction)
=================  ==================================  ===============================

A model that knows the call syntax but not a group's conventions writes the call with the
request's own words (``duration="45 minutes"``) and fails that group. Every row is generated
from ``seed``: each function's pool of values is shuffled once and split, the first
``n_eval`` values held out, the next ``n_train`` for training — held-out values never appear
in any training row (``train_values`` / ``eval_values``; a default-suite test computes the
overlap). The prompt (``madopd.realworld.prompts.shots_as_turns``) shows ``n_shots`` solved
calls of *other* functions (format shots, plain values, no convention) as earlier chat turns
before the request; one by default (each shot adds ~60 tokens to every training, debate and
scoring context — on 2 loaded cores the prompt length is the budget).
``verify`` is ``madopd.realworld.calls.parse_call`` exact match.
"""

from __future__ import annotations

import calendar
import random
from dataclasses import dataclass, field
from typing import Any

from madopd.realworld.calls import parse_call
from madopd.realworld.prompts import shots_as_turns
from madopd.types import State

GROUPS: dict[str, tuple[str, ...]] = {
    "time": ("set_timer", "set_alarm", "schedule_meeting", "remind_me"),
    "names": ("get_weather", "get_stock_price", "send_message", "set_volume"),
}
HOUSE_YEAR = 2026
_CITIES = ("Denver", "Madrid", "Tokyo", "Oslo", "Lima", "Cairo", "Dublin", "Seoul", "Quito",
           "Perth", "Austin", "Boston", "Chicago", "Dallas", "Miami", "Phoenix", "Seattle",
           "Toronto", "Vancouver", "Montreal", "Lisbon", "Porto", "Berlin", "Munich", "Vienna",
           "Prague", "Warsaw", "Krakow", "Athens", "Rome", "Milan", "Naples", "Paris", "Lyon",
           "Nice", "Geneva", "Zurich", "Basel", "Brussels", "Antwerp", "Amsterdam", "Helsinki",
           "Stockholm", "Copenhagen", "Riga", "Tallinn", "Vilnius", "Budapest", "Sofia",
           "Bucharest", "New York", "Los Angeles", "San Diego", "San Jose", "Buenos Aires",
           "Mexico City", "Cape Town", "Hong Kong", "Kuala Lumpur", "Tel Aviv", "Rio de Janeiro",
           "Las Vegas", "New Orleans", "Salt Lake City")
_NAMES = ("Maria", "John", "Aisha", "Wei", "Olga", "Pedro", "Fatima", "Liam", "Noah", "Emma",
          "Sofia", "Lucas", "Mia", "Ethan", "Zoe", "Omar", "Yuki", "Ravi", "Ines", "Hugo",
          "Lena", "Ivan", "Nora", "Felix", "Clara", "Jonas", "Elif", "Tariq", "Priya", "Diego",
          "Anna", "Mateo", "Leila", "Sven", "Greta", "Kofi", "Amara", "Chen", "Hana", "Luca")
_EXCHANGES = ("Nasdaq", "NYSE", "LSE", "TSX")
_FORMAT_SHOTS = (  # three plain calls of other functions: the call syntax, no convention
    ({"name": "search_web", "description": "Search the web.", "parameters": {"query": "string"}},
     "Search the web for banana bread recipes.", 'search_web(query="banana bread recipes")'),
    ({"name": "add_numbers", "description": "Add two numbers.",
      "parameters": {"a": "number", "b": "number"}},
     "What is 12 plus 30?", "add_numbers(a=12, b=30)"),
    ({"name": "translate", "description": "Translate a text.",
      "parameters": {"text": "string", "language": "string"}},
     "Translate good morning into French.", 'translate(text="good morning", language="French")'),
)


def _spec(name: str, description: str, arg: str, kind: str) -> dict[str, Any]:
    return {"name": name, "description": description, "parameters": {arg: kind}}


def _hour12(h: int) -> str:
    return f"{(h - 1) % 12 + 1}"


def _pools(rng: random.Random) -> dict[str, list[Any]]:
    """Every function's value pool (deterministic order before the shuffle)."""
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    symbols = sorted({"".join(rng.choice(letters) for _ in range(3)) for _ in range(400)})[:200]
    return {
        # hours 10-12 are left out: "10:30 am" would show the house value verbatim
        "set_timer": list(range(2, 180)),
        "set_alarm": [(h, m) for h in range(24) if h not in (10, 11, 12) for m in range(0, 60, 5)],
        "schedule_meeting": [(mo, d) for mo in range(1, 13) for d in range(1, 29)],
        "remind_me": list(range(2, 240)),
        "get_weather": list(_CITIES),
        "get_stock_price": [(s, e) for s in symbols for e in _EXCHANGES][::3],
        "send_message": list(_NAMES),
        "set_volume": list(range(1, 100)),
    }


def naive_call(row: dict[str, Any]) -> str:
    """The call written with the request's own words (what a model without the group's
    convention writes; the debate's wrong answers in the zoo's transcript data)."""
    return f'{row["family"]}({next(iter(row["function"]["parameters"]))}={row["naive"]!r})'.replace("'", '"')


def _row(fn: str, v: Any, rng: random.Random) -> tuple[dict, str, str, Any]:
    """(spec, request, reference call, the free value as it appears in the call)."""
    if fn == "set_timer":
        q = rng.choice(["Set a timer for {v} minutes.", "Start a {v} minute timer."]).format(v=v)
        return _spec(fn, "Start a countdown timer.", "duration", "string"), q, f'set_timer(duration="PT{v}M")', f"PT{v}M"
    if fn == "set_alarm":
        h, m = v
        said = f"{_hour12(h)}:{m:02d} {'am' if h < 12 else 'pm'}"
        q = rng.choice(["Wake me at {t}.", "Set an alarm for {t}."]).format(t=said)
        val = f"{h:02d}:{m:02d}"
        return _spec(fn, "Set an alarm clock.", "time", "string"), q, f'set_alarm(time="{val}")', val
    if fn == "schedule_meeting":
        mo, d = v
        said = f"{calendar.month_name[mo]} {d}"
        q = rng.choice(["Put a meeting on {t}.", "Schedule a meeting for {t}."]).format(t=said)
        val = f"{HOUSE_YEAR}-{mo:02d}-{d:02d}"
        return _spec(fn, "Schedule a meeting.", "date", "string"), q, f'schedule_meeting(date="{val}")', val
    if fn == "remind_me":
        q = rng.choice(["Remind me in {v} minutes.", "Give me a reminder in {v} minutes."]).format(v=v)
        return _spec(fn, "Set a reminder.", "seconds", "integer"), q, f"remind_me(seconds={60 * v})", 60 * v
    if fn == "get_weather":
        q = rng.choice(["What's the weather in {c}?", "How is the weather in {c} today?"]).format(c=v)
        val = v.lower().replace(" ", "_")
        return _spec(fn, "Get the current weather for a city.", "city", "string"), q, f'get_weather(city="{val}")', val
    if fn == "get_stock_price":
        s, e = v
        q = rng.choice(["What is {s} trading at on the {e}?", "Get the price of {s} on the {e}."]).format(s=s, e=e)
        val = f"{e.upper()}:{s}"
        return _spec(fn, "Get a stock's latest price.", "ticker", "string"), q, f'get_stock_price(ticker="{val}")', val
    if fn == "send_message":
        q = rng.choice(["Message {n}.", "Send a message to {n}."]).format(n=v)
        val = f"@{v.lower()}"
        return _spec(fn, "Open a chat with a colleague.", "to", "string"), q, f'send_message(to="{val}")', val
    if fn == "set_volume":
        q = rng.choice(["Set the volume to {v} percent.", "Turn the volume to {v}%."]).format(v=v)
        return _spec(fn, "Set the speaker volume.", "level", "number"), q, f"set_volume(level={v / 100})", v / 100
    raise KeyError(fn)


def _naive(fn: str, v: Any) -> Any:
    if fn == "set_alarm":
        return f"{_hour12(v[0])}:{v[1]:02d} {'am' if v[0] < 12 else 'pm'}"
    if fn == "schedule_meeting":
        return f"{calendar.month_name[v[0]]} {v[1]}"
    if fn == "get_stock_price":
        return v[0]
    if fn == "set_timer":
        return f"{v} minutes"
    return v  # remind_me: minutes, get_weather / send_message: the name, set_volume: percent


def generate_rows(seed: int = 0, n_train: int = 24, n_eval: int = 8) -> list[dict[str, Any]]:
    """All rows: per function ``n_eval`` held-out then ``n_train`` training rows (dicts with id,
    family, group, function, question, call, value, split). Deterministic in ``seed``."""
    rng = random.Random(seed)
    pools = _pools(rng)
    rows = []
    for group, fns in GROUPS.items():
        for fn in fns:
            pool = list(pools[fn])
            if len(pool) < n_train + n_eval:
                raise ValueError(f"{fn}: pool of {len(pool)} < {n_train + n_eval} values")
            rng.shuffle(pool)
            for i, v in enumerate(pool[: n_eval + n_train]):
                spec, q, call, val = _row(fn, v, rng)
                rows.append({"id": f"{fn}-{i}", "family": fn, "group": group, "function": spec,
                             "question": q, "call": call, "value": val, "naive": _naive(fn, v),
                             "split": "eval" if i < n_eval else "train"})
    return rows


def format_shots() -> list[dict[str, Any]]:
    return [{"function": f, "question": q, "call": c} for f, q, c in _FORMAT_SHOTS]


@dataclass
class HouseCallsTask:
    """The real world's task: house-convention function calling (``kind = "tool_use"``)."""

    seed: int = 0
    n_train: int = 24
    n_eval: int = 8
    groups: tuple[str, ...] | None = None  # None = every group
    n_shots: int = 1  # format shots (of _FORMAT_SHOTS) before the request
    name: str = "house-calls"
    kind: str = "tool_use"
    rows: list[dict] = field(default_factory=list, repr=False)

    def __post_init__(self):
        rows = generate_rows(self.seed, self.n_train, self.n_eval)
        self.rows = [r for r in rows if self.groups is None or r["group"] in self.groups]

    def make_state(self, row: dict) -> State:
        return State(id=row["id"], messages=shots_as_turns(row, format_shots()[: self.n_shots]),
                     reference=row["call"], family=row["family"])

    def train_rows(self) -> list[dict]:
        return [r for r in self.rows if r["split"] == "train"]

    def eval_rows(self) -> list[dict]:
        return [r for r in self.rows if r["split"] == "eval"]

    def train_states(self) -> list[State]:
        return [self.make_state(r) for r in self.train_rows()]

    def eval_states(self) -> list[State]:
        return [self.make_state(r) for r in self.eval_rows()]

    def group_of(self, family: str) -> str:
        return next(g for g, fns in GROUPS.items() if family in fns)

    def verify(self, state: State, response: str) -> float:
        got, ref = parse_call(response), parse_call(state.reference or "")
        return float(got is not None and got == ref)


def train_values(rows: list[dict]) -> set[tuple[str, str]]:
    return {(r["family"], repr(r["value"])) for r in rows if r["split"] == "train"}


def eval_values(rows: list[dict]) -> set[tuple[str, str]]:
    return {(r["family"], repr(r["value"])) for r in rows if r["split"] == "eval"}
