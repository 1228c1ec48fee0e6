"""anywidget classes: a payload (synced dict) + a bundled ES module + the static fallback.

This is the only module of madopd that imports anywidget/ipywidgets/traitlets; the package's
``__init__`` imports it lazily, so ``import madopd.widgets`` works without the notebook extra.

Every widget's ``_repr_mimebundle_`` adds ``text/html`` (the static render) next to the widget
view: JupyterLab with a kernel shows the live widget; exported HTML, GitHub and any viewer
without widget state show the static render instead.
"""

from __future__ import annotations

from madopd.errors import MissingExtraError

try:
    import anywidget
    import traitlets
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("anywidget", "notebooks", "madopd notebook widgets") from exc

import copy
import threading
import time
from collections.abc import Callable, Sequence

from madopd.types import StepRecord, Transcript
from madopd.widgets import assets
from madopd.widgets import dashboard as dash
from madopd.widgets.board import debate_payload, render_debate_html, render_debate_png
from madopd.widgets.decomposition import (
    decomposition_payload,
    render_decomposition_html,
    render_decomposition_png,
)
from madopd.widgets.failures import failures_payload, render_failures_html, render_failures_png
from madopd.widgets.lens import lens_payload, render_lens_html, render_lens_png
from madopd.widgets.playground import (
    playground_payload,
    render_playground_html,
    render_playground_png,
)


class MadopdWidget(anywidget.AnyWidget):
    """Base class: ``payload`` (JSON dict) is the widget's data; ``static_html()`` its fallback."""

    payload = traitlets.Dict().tag(sync=True)
    _css = assets.css()

    def static_html(self) -> str:
        raise NotImplementedError

    def to_png(self) -> bytes:
        """The static render as PNG bytes (colours only, same scales as ``static_html``)."""
        raise NotImplementedError

    def save_png(self, path) -> None:
        from pathlib import Path

        Path(path).write_bytes(self.to_png())

    def _repr_mimebundle_(self, **kwargs):
        out = super()._repr_mimebundle_(**kwargs)
        data, meta = out if isinstance(out, tuple) else (out, {})
        data = dict(data)
        data["text/html"] = self.static_html()
        try:  # JupyterLab keeps image/png in untrusted notebooks (the HTML's SVG is sanitised away)
            import base64

            data["image/png"] = base64.b64encode(self.to_png()).decode("ascii")
        except NotImplementedError:
            pass
        return data, meta


class PlotlyLibrary(anywidget.AnyWidget):
    """plotly.js itself, once per kernel: a hidden model whose ``source`` is plotly's own dist file
    from the installed python package (no CDN; works offline). Chart widgets hold its id in
    ``_plotly`` and load it in the browser through anywidget's ``host.getModel``
    (widgets/plots.js). Saved widget state keeps it, so a reopened notebook draws its charts."""

    _esm = "export default { render() {} };"
    source = traitlets.Unicode("").tag(sync=True)


_LIBRARY: list[PlotlyLibrary] = []


def plotly_ref() -> str:
    """``anywidget:<id>`` (anywidget's widget reference) of this kernel's PlotlyLibrary (created on first use)."""
    if not _LIBRARY or _LIBRARY[0].comm is None:  # closed (widget.close_all()): make another
        _LIBRARY[:] = [PlotlyLibrary(source=assets.plotly_source())]
    return "anywidget:" + _LIBRARY[0].model_id


class PlotlyChart(MadopdWidget):
    """A widget whose front end draws with plotly.js (see PlotlyLibrary)."""

    _plotly = traitlets.Unicode("").tag(sync=True)

    def __init__(self, **kw):
        super().__init__(_plotly=plotly_ref(), **kw)


class Playground(PlotlyChart):
    """Divergence playground: drag a teacher, watch FKL / RKL / JSD(β) students fit it."""

    _esm = assets.bundle("playground.js")
    beta = traitlets.Float(0.5).tag(sync=True)
    temperature = traitlets.Float(1.0).tag(sync=True)
    teacher_probs = traitlets.List(traitlets.Float()).tag(sync=True)

    def __init__(self, teacher_probs=None, **kw):
        opts = {k: kw.pop(k) for k in list(kw) if k in (
            "labels", "family", "init", "beta", "temperature", "lr", "sigma_range")}
        payload = playground_payload(**({} if teacher_probs is None else
                                        {"teacher_probs": teacher_probs}), **opts)
        super().__init__(payload=payload, beta=payload["beta"],
                         temperature=payload["temperature"],
                         teacher_probs=list(payload["teacher_probs"]), **kw)

    def current_payload(self) -> dict:
        """The payload as the browser shows it now: the dragged teacher, β and T (synced)."""
        return dict(self.payload, beta=self.beta, temperature=self.temperature,
                    teacher_probs=list(self.teacher_probs) or self.payload["teacher_probs"])

    _static_payload = current_payload

    def static_html(self) -> str:
        return render_playground_html(self._static_payload())

    def to_png(self) -> bytes:
        return render_playground_png(self._static_payload())


class DivergenceLens(MadopdWidget):
    """One completion's tokens coloured by FKL / RKL / JSD(β); click a token for its top-k.

    ``selected_token`` (synced) is the index the user clicked (-1 = none).
    """

    _esm = assets.bundle("lens.js")
    beta = traitlets.Float(0.5).tag(sync=True)
    teacher = traitlets.Int(0).tag(sync=True)
    selected_token = traitlets.Int(-1).tag(sync=True)
    shared_scale = traitlets.Bool(True).tag(sync=True)  # one colour scale for every strip

    def __init__(self, record: StepRecord, sample: int = 0, *, beta: float = 0.5,
                 decode=None, **kw):
        self._decode = decode
        super().__init__(payload=lens_payload(record, sample, beta=beta, decode=decode),
                         beta=beta, **kw)

    def show(self, record: StepRecord, sample: int = 0) -> None:
        """Switch the lens to another sample (used by the failure-case finder)."""
        self.selected_token = -1
        self.payload = lens_payload(record, sample, beta=self.beta, decode=self._decode)

    def _static_payload(self) -> dict:
        from madopd.widgets.lens import lens_values

        p = dict(self.payload)
        if p.get("has_topk") and self.beta != p["beta"]:
            p["values"], p["beta"] = lens_values(p, self.beta), self.beta
        return p

    def static_html(self) -> str:
        return render_lens_html(self._static_payload())

    def to_png(self) -> bytes:
        return render_lens_png(self._static_payload())


class DebateBoard(MadopdWidget):
    """Teachers × rounds with confidence badges, τ-weights and the student's per-teacher strips."""

    _esm = assets.bundle("debate.js")
    tau = traitlets.Float(1.0).tag(sync=True)
    only_disagreements = traitlets.Bool(False).tag(sync=True)
    index = traitlets.Int(0).tag(sync=True)  # which debate of ``browse`` is shown

    @classmethod
    def browse(cls, records: Sequence[StepRecord] = (), *, transcripts: Sequence[Transcript] = (),
               references: dict | None = None, tau: float = 1.0, policy: str = "uniform",
               **kw) -> DebateBoard:
        """A board over every debate of a run (prev/next, search by state id): one entry per
        (step, sample) of ``records`` with a transcript, in step order, then each of
        ``transcripts`` (debates run without a student); ``references`` = {state_id: answer}."""
        entries = [(r.transcripts[b], r, b) for r in records for b in range(len(r.transcripts))
                   if r.transcripts[b] is not None] + [(t, None, 0) for t in transcripts]
        if not entries:
            from madopd.errors import DataError

            raise DataError("no debate to browse: every record has R = 0 (no transcripts)")
        board = cls(entries[0][0], record=entries[0][1], sample=entries[0][2], tau=tau,
                    policy=policy, **kw)
        board._entries, board._references = entries, dict(references or {})
        board.observe(lambda _c: board._show_entry(), names="index")
        board._show_entry()
        return board

    def show_sample(self, record: StepRecord, sample: int, reference: str | None = None) -> None:
        """Show ``record``'s debate for ``sample``; a browsing board moves its index there (so
        prev/next continue from it)."""
        entries = getattr(self, "_entries", None)
        if entries:
            for i, (_, r, b) in enumerate(entries):
                if r is not None and r.step == record.step and b == sample:
                    if self.index == i:
                        self._show_entry()
                    else:
                        self.index = i  # the observer shows it
                    return
        self.show(record.transcripts[sample], record=record, sample=sample, reference=reference)

    def _show_entry(self) -> None:
        i = min(max(self.index, 0), len(self._entries) - 1)
        tr, rec, b = self._entries[i]
        self.show(tr, record=rec, sample=b, reference=self._references.get(tr.state_id))
        self.payload = dict(self.payload, browse={
            "index": i, "count": len(self._entries),
            "ids": [(f"step {r.step} · " if r is not None else "") + t.state_id
                    for t, r, _ in self._entries]})

    def __init__(self, transcript: Transcript | None = None, *, record: StepRecord | None = None,
                 sample: int = 0, tau: float = 1.0, policy: str = "uniform",
                 reference: str | None = None, **kw):
        if transcript is None and record is not None:
            transcript = record.transcripts[sample]
        payload = debate_payload(transcript, record=record, sample=sample, tau=tau, policy=policy,
                                 reference=reference) if transcript is not None else {}
        super().__init__(payload=payload, tau=tau, **kw)

    def show(self, transcript: Transcript, *, record: StepRecord | None = None,
             sample: int = 0, policy: str | None = None, reference: str | None = None) -> None:
        """Switch the board to another debate (used by the failure-case finder)."""
        self.payload = debate_payload(transcript, record=record, sample=sample, tau=self.tau,
                                      policy=policy or self.payload.get("policy", "uniform"),
                                      reference=reference)

    def static_html(self) -> str:
        if not self.payload:
            return "<div>empty debate board</div>"
        return render_debate_html(dict(self.payload, tau=self.tau) if self.tau ==
                                  self.payload["tau"] else self._repayload())

    def to_png(self) -> bytes:
        if not self.payload:
            return render_debate_png({})
        return render_debate_png(dict(self.payload, tau=self.tau) if self.tau ==
                                 self.payload["tau"] else self._repayload())

    def _repayload(self) -> dict:
        from madopd.widgets import divmath

        p = dict(self.payload, tau=self.tau)
        p["weights"] = divmath.confidence_weights(p["final_confidences"], self.tau, p["policy"])
        return p


class LossDecomposition(PlotlyChart):
    """Per-token loss by teacher (stacked w_k·D_k), with the equal-weights counterfactual."""

    _esm = assets.bundle("decomposition.js")

    def __init__(self, record: StepRecord, sample: int = 0, **kw):
        super().__init__(payload=decomposition_payload(record, sample), **kw)

    def show(self, record: StepRecord, sample: int = 0) -> None:
        """Switch to another sample (used by the failure-case finder)."""
        self.payload = decomposition_payload(record, sample)

    def static_html(self) -> str:
        return render_decomposition_html(self.payload)

    def to_png(self) -> bytes:
        return render_decomposition_png(self.payload)


class FailureFinder(MadopdWidget):
    """Sortable, filterable table of a run's samples; ``selected`` = {"step", "sample"} (synced).

    With ``board=DebateBoard(...)``, ``lens=DivergenceLens(...)`` and/or
    ``decomposition=LossDecomposition(...)`` those views follow the selection (linked through
    the kernel): one click on a row shows its debate, its tokens and its loss split.
    ``references`` = {state_id: reference answer} judges each teacher's answer.
    """

    _esm = assets.bundle("failures.js")
    selected = traitlets.Dict().tag(sync=True)

    def __init__(self, records: Sequence[StepRecord], *, board: DebateBoard | None = None,
                 lens: DivergenceLens | None = None, decomposition: LossDecomposition | None = None,
                 references: dict | None = None, **kw):
        self.records = list(records)
        self.references = dict(references or {})
        super().__init__(payload=failures_payload(self.records, references), **kw)
        self.board, self.lens, self.decomposition = board, lens, decomposition
        self.observe(self._on_select, names="selected")

    def selected_record(self) -> tuple[StepRecord, int] | None:
        """The (record, sample index) the user clicked, or None."""
        if not self.selected:
            return None
        for r in self.records:
            if r.step == self.selected.get("step"):
                return r, int(self.selected["sample"])
        return None

    def _on_select(self, _change) -> None:
        hit = self.selected_record()
        if hit is None:
            return
        rec, b = hit
        if self.board is not None and b < len(rec.transcripts) and rec.transcripts[b] is not None:
            self.board.show_sample(rec, b, reference=self.references.get(rec.state_ids[b]))
        if self.lens is not None:
            self.lens.show(rec, b)
        if self.decomposition is not None:
            self.decomposition.show(rec, b)

    def static_html(self) -> str:
        return render_failures_html(self.payload)

    def to_png(self) -> bytes:
        return render_failures_png(self.payload)


class LiveDashboard(PlotlyChart):
    """Training curves fed by ``Distiller.train(callbacks=[dashboard])``, with pause/resume.

    ``probe(step) -> (tokens, values)`` (see ``make_probe``) is re-scored every ``every`` steps
    into the step × token ribbon. Pausing blocks the callback between steps. The browser's
    pause reaches the kernel only while no cell blocks it, so train with
    ``start(distiller, steps)`` (a background thread) and wait with ``await dash.wait()`` (the
    kernel keeps handling the button meanwhile), not ``join()``.
    """

    _esm = assets.bundle("dashboard.js")
    paused = traitlets.Bool(False).tag(sync=True)
    stop_requested = traitlets.Bool(False).tag(sync=True)
    paused_at = traitlets.Int(-1).tag(sync=True)  # the step the training thread waits after (-1: running)
    finished = traitlets.Bool(False).tag(sync=True)  # training ended: the pause button is disabled

    def __init__(self, teacher_names: Sequence[str] = (), *, every: int = 10,
                 probe: Callable[[int], tuple[list[str], list[float]]] | None = None,
                 records: Sequence[StepRecord] = (), total_steps: int | None = None,
                 policy: str = "uniform", name: str = "this run", **kw):
        self._data = dash.dashboard_payload(teacher_names, every=every, records=records,
                                            total_steps=total_steps, policy=policy)
        self._data["name"] = str(name)
        self.probe, self.every = probe, every
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.records: list[StepRecord] = []
        self.paused_seconds = 0.0  # time the training thread spent waiting on "pause"
        super().__init__(payload=copy.deepcopy(self._data), **kw)
        self.on_msg(self._on_frontend_msg)

    def add_run(self, name: str, source) -> None:
        """Overlay another run on the same charts (dashed; MAD-OPD vs MT-OPD, seeds).

        ``source``: StepRecords, a run folder (read-only), or another LiveDashboard, which is
        followed live (its curves grow here as it trains). A second call with the same name
        replaces that overlay."""
        if isinstance(source, LiveDashboard):
            def follow(_change=None, other=source):
                dash.put_run(self._data, {"name": str(name), **{
                    k: copy.deepcopy(other._data[k]) for k in dash.RUN_KEYS}})
                self.payload = copy.deepcopy(self._data)

            source.observe(follow, names="payload")
            follow()
            return
        dash.set_run(self._data, name, dash.run_records(source))
        self.payload = copy.deepcopy(self._data)

    @classmethod
    def compare(cls, runs: dict, *, name: str | None = None, **kw) -> LiveDashboard:
        """A dashboard over finished runs: ``{name: records | run folder | LiveDashboard}``; the
        first is the dashboard's own run, the others overlays."""
        if not runs:
            from madopd.errors import ConfigError

            raise ConfigError("LiveDashboard.compare needs at least one run")
        (first, src), *rest = runs.items()
        recs = dash.run_records(src) if not isinstance(src, LiveDashboard) else src.records
        board = cls(records=recs, name=str(name or first), **kw)
        for n, s in rest:
            board.add_run(n, s)
        board.payload = copy.deepcopy(board._data)
        board.finished = True
        return board

    def _on_frontend_msg(self, _widget, content, _buffers) -> None:
        """The pause button's ``{"event": "pause", "paused": bool}`` (a custom message: see
        widgets/dashboard.js for why it is not a trait sync)."""
        if isinstance(content, dict) and content.get("event") == "pause":
            self.paused = bool(content.get("paused"))

    def on_step(self, record: StepRecord) -> bool:
        """Distiller callback: fold the record in, re-score the probe, honour pause/stop."""
        dash.add_record(self._data, record, now=time.time() - self.paused_seconds)
        if self.probe is not None and record.step % self.every == 0:
            tokens, values = self.probe(record.step)
            dash.add_probe(self._data, record.step, tokens, values)
        self.payload = copy.deepcopy(self._data)  # a new object so the change is synced
        t0 = time.monotonic()
        if self.paused and not self.stop_requested:
            self.paused_at = record.step  # the browser shows "paused after step N"
            while self.paused and not self.stop_requested:
                time.sleep(0.05)
            self.paused_at = -1
        self.paused_seconds += time.monotonic() - t0
        return not self.stop_requested

    __call__ = on_step

    def should_stop(self) -> bool:
        return self.stop_requested

    def start(self, distiller, steps: int) -> threading.Thread:
        """Train in a background thread so the browser can pause/resume while it runs."""
        if self._thread is not None and self._thread.is_alive():
            from madopd.errors import ConfigError

            raise ConfigError("this dashboard is already training; call join() first")

        def run():
            try:
                self.records += distiller.train(steps, callbacks=[self], progress=False)
            except BaseException as exc:  # re-raised in join(), never swallowed
                self._error = exc
            finally:
                self.finished = True

        self.finished = False
        self._thread = threading.Thread(target=run, name="madopd-train", daemon=True)
        self._thread.start()
        return self._thread

    async def wait(self, poll: float = 0.1) -> list[StepRecord]:
        """``records = await dash.wait()``: ``join()`` that keeps the kernel responsive.

        A cell blocked in ``join()`` holds the kernel's shell: the browser's "pause" (a comm
        message) is handled only after the cell ends, i.e. after training, so pause does nothing
        (e.g. under "Run All"). While a cell *awaits*, ipykernel (>= 7) dispatches comm messages
        concurrently, so the pause flag arrives within milliseconds and the training thread
        stops at the next step boundary.
        """
        import asyncio

        while self._thread is not None and self._thread.is_alive():
            await asyncio.sleep(poll)
        return self.join()

    def join(self, timeout: float | None = None) -> list[StepRecord]:
        """Block until training ends; the kernel handles no widget message meanwhile (see
        ``wait``); re-raises the training thread's error."""
        if self._thread is not None:
            self._thread.join(timeout)
        if self._error is not None:
            err, self._error = self._error, None
            raise err
        return self.records

    def static_html(self) -> str:
        return dash.render_dashboard_html(self._data)

    def to_png(self) -> bytes:
        return dash.render_dashboard_png(self._data)


def make_probe(distiller, state, *, max_new_tokens: int = 32):
    """A fixed probe for the dashboard ribbon: the student's greedy answer to ``state`` (sampled
    once, now), re-scored on each call as the mean over teachers of D(p_k ‖ q) per token.

    Teachers score with the blind context (``debate.score_context(state, None, k)``) so the
    probe costs no debate. Returns ``probe(step) -> (tokens, values)``.
    """
    import torch

    from madopd.divergence import per_teacher_divergence
    from madopd.types import Sampling

    student = distiller.student
    samples = student.rollout([state], Sampling(greedy=True, max_new_tokens=max_new_tokens))
    tokens = [student.tokenizer.decode([i]) for i in samples.response_ids[0]]  # one per token
    contexts = [distiller.debate.score_context(state, None, k) for k in range(distiller.K)]

    def probe(step: int) -> tuple[list[str], list[float]]:
        with torch.no_grad():
            logits, mask = student.response_logits(samples)  # [1, T, V], [1, T]
            dists = [t.score([ctx], samples.response_ids, top_k=distiller.config.score_top_k).dists
                     for t, ctx in zip(distiller.teachers, contexts)]
            per = per_teacher_divergence(logits, dists, distiller.spec, mask=mask,
                                         temperature=distiller.config.loss_temperature)
        values = per[0].mean(-1)[: len(tokens)]  # [T]
        return tokens, [float(v) for v in values]

    return probe
