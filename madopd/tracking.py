"""Experiment trackers: TensorBoard, trackio and W&B, through their own libraries (issue 24).

``DistillConfig.report_to`` names the trackers; the Distiller calls :func:`log_step` from its
main process only (``Distiller._log``), just before the step's line goes to ``metrics.jsonl``.
Each tracker receives, at the step's number:

* every scalar of that line, under the same names (``loss``, ``div/<teacher>``,
  ``weight/<teacher>``, ``n_eff``, ``time/*``, ``count/*``, ``eval/*`` ...);
* ``share/<teacher>``: the teacher's share of the step's loss tokens, Σ_b Σ_t w_btk / Σ_b T_b
  over kept samples (per-token weights when the weighting is per token, else each sample's
  weight on each of its tokens). Computed from the step record, so under several processes it
  is logged on recorded steps only (the other steps' records hold the main process's samples);
* every ``record_every`` steps a debate/completions table (:func:`debate_table`, one row per
  sample): a W&B Table, a trackio Table, a TensorBoard text panel (markdown).

Offline by default (``tracking_offline``): W&B runs in offline mode under ``RUN/wandb``
(``wandb sync`` uploads it later), trackio writes its local SQLite store (``$TRACKIO_DIR``,
else ``RUN/trackio``), TensorBoard writes event files under ``RUN/tensorboard``.

After a resume, TensorBoard drops what the first attempt logged from the checkpoint's step on
(``purge_step``), as ``metrics.jsonl`` does. W&B writes each attempt (each ``train()`` call)
as its own ``offline-run-*`` folder under the run's one id (measured: a resume's folder holds
only the steps it logged; which values the server keeps on ``wandb sync`` is W&B's rule);
trackio keeps both attempts' rows of a step.

A tracker that fails (at start or while logging) is counted in the same step's metrics line as
``count/tracking/<tracker>_errors``; ``on_tracker_error`` says what follows: 'continue' (try
again next step), 'disable' (stop using it, ``count/tracking/<tracker>_disabled``) or 'raise'
(``TrackerError``). A missing package is one ``MissingExtraError`` naming the ``tracking`` extra.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import sys
import unicodedata
from pathlib import Path
from typing import Any

from madopd.errors import ConfigError, MissingExtraError, TrackerError

TRACKERS = ("tensorboard", "trackio", "wandb")
ON_TRACKER_ERROR = ("continue", "disable", "raise")
TABLE_KEY = "debate"
MAX_CELL_CHARS = 2000  # longer model text is cut in table cells (counted)


def normalize_report_to(value: Any) -> list[str]:
    """``report_to`` as a list of tracker names: accepts a list or ``"a,b"``; ``"all"`` = every
    tracker, ``"none"`` = none. Unknown or repeated names raise ConfigError."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(x).strip().lower() for x in items if str(x).strip()]
    if names == ["none"]:
        return []
    if names == ["all"]:
        return list(TRACKERS)
    for n in names:
        if n not in TRACKERS:
            raise ConfigError(f"field 'report_to': unknown tracker {n!r}; choose from "
                              f"{list(TRACKERS)}, 'all' or 'none'")
    if len(set(names)) != len(names):
        raise ConfigError(f"field 'report_to' names a tracker twice: {names}")
    return names


def check_installed(report_to: list[str]) -> None:
    """One ``MissingExtraError`` for the first tracker whose package is not installed."""
    for name in report_to:
        if importlib.util.find_spec(name) is None:
            raise MissingExtraError(name, "tracking", f"report_to={name!r}")


# ------------------------------------------------------------------------ tables and shares
def _cell(text: Any, counters: dict[str, float]) -> str:
    s = "" if text is None else str(text)
    if len(s) > MAX_CELL_CHARS:
        counters["count/tracking/table_cells_truncated"] = \
            counters.get("count/tracking/table_cells_truncated", 0) + 1
        s = s[:MAX_CELL_CHARS] + " …[cut]"
    return s


def _summary(values: list[float]) -> tuple[float | None, float | None, float | None]:
    """mean, 90th percentile (nearest rank), max of a sample's per-token values."""
    vals = sorted(float(v) for v in values)
    if not vals:
        return None, None, None
    p90 = vals[min(len(vals) - 1, max(0, int(0.9 * len(vals) + 0.5) - 1))]
    return sum(vals) / len(vals), p90, vals[-1]


def _turns(transcript: Any, k: int) -> tuple[str, float | None, str]:
    """Teacher k's turns as text, its final confidence and that confidence's source."""
    if transcript is None:
        return "", None, "no debate"
    lines, conf, source = [], None, "missing"
    for m in sorted((m for m in transcript.messages if m.teacher == k), key=lambda m: m.round):
        c = "–" if m.confidence is None else f"{m.confidence:g}"
        src = "failed" if m.failed else (m.confidence_source or
                                         ("missing" if m.confidence is None else "tag"))
        lines.append(f"R{m.round} [{c}, {src}]: {m.answer if not m.failed else m.error}")
        conf, source = m.confidence, src
    return "\n".join(lines), conf, source


def debate_table(record: Any, references: dict[str, str | None] | None = None
                 ) -> tuple[list[str], list[list[Any]], dict[str, float]]:
    """One row per sample of a step record: columns, rows and counters (cut cells).

    Columns: step, state_id, family, state (the student's prompt), reference, student sample,
    correct, skipped, tokens, loss mean/p90/max over the sample's tokens, then per teacher
    ``<name> turns`` (each round: confidence, its source, answer), ``<name> confidence`` (last
    round), ``<name> source``, ``<name> weight``, ``<name> div mean``. Model text is data: the
    trackers display it as text (the TensorBoard panel escapes it, :func:`markdown_table`).
    """
    counters: dict[str, float] = {}
    names = list(record.teacher_names)
    columns = ["step", "state_id", "family", "state", "reference", "student_sample", "correct",
               "skipped", "tokens", "loss_mean", "loss_p90", "loss_max"]
    for n in names:
        columns += [f"{n} turns", f"{n} confidence", f"{n} source", f"{n} weight",
                    f"{n} div mean"]
    refs = references or {}
    rows = []
    for b, sid in enumerate(record.state_ids):
        def get(seq, default=None, b=b):
            return seq[b] if b < len(seq) else default

        losses = get(record.per_token_loss, []) or []
        mean, p90, mx = _summary(losses)
        row = [record.step, sid, get(record.families), _cell(get(record.prompts), counters),
               _cell(refs.get(sid), counters), _cell(get(record.responses), counters),
               get(record.correct), bool(get(record.skipped, False)), len(losses), mean, p90, mx]
        tr = get(record.transcripts)
        divs = get(record.per_token_divergence, []) or []
        weights = get(record.weights, []) or []
        for k in range(len(names)):
            text, conf, source = _turns(tr, k)
            dk = [t[k] for t in divs if k < len(t)]
            row += [_cell(text, counters), conf, source,
                    weights[k] if k < len(weights) else None, _summary(dk)[0]]
        rows.append(row)
    return columns, rows, counters


def token_shares(record: Any) -> dict[str, float]:
    """``share/<teacher>``: Σ_b Σ_t w_btk / Σ_b T_b over kept samples ({} without tokens)."""
    names = list(record.teacher_names)
    tot = [0.0] * len(names)
    n = 0
    for b, ids in enumerate(record.response_ids):
        if (b < len(record.skipped) and record.skipped[b]) or b >= len(record.weights):
            continue
        per_tok = record.token_weights[b] if record.token_weights else None
        for t in range(len(ids)):
            w = per_tok[t] if per_tok is not None and t < len(per_tok) else record.weights[b]
            for k in range(len(names)):
                tot[k] += float(w[k])
            n += 1
    return {f"share/{name}": tot[k] / n for k, name in enumerate(names)} if n else {}


def markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    """A markdown table for TensorBoard's text panel. Model text is escaped: ``<``/``>``/``&``
    as entities, ``|`` escaped, newlines as ``<br>``, other control / bidi / separator characters
    as ``\\uXXXX`` (one row per line, text shown as written; TensorBoard sanitises HTML too)."""
    def esc(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        s = "" if v is None else str(v)
        s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        s = s.replace("|", "\\|").replace("\r\n", "\n").replace("\n", "<br>")
        # other control, bidi and line/paragraph separators would break rows or reorder text
        return "".join(f"\\u{ord(c):04x}" if unicodedata.category(c)[0] == "C" or
                       unicodedata.category(c) in ("Zl", "Zp") else c for c in s)

    out = ["| " + " | ".join(esc(c) for c in columns) + " |",
           "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(esc(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


# ------------------------------------------------------------------------ the three backends
class _TensorBoard:
    name = "tensorboard"

    def __init__(self, run_dir: Path, run_name: str, project: str, config: dict, offline: bool,
                 first_step: int = 1):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self.location = run_dir / "tensorboard"
        # a resumed run starts again at its checkpoint's step: TensorBoard drops what the
        # first attempt logged from there on, as metrics.jsonl does (purge_step)
        self.writer = SummaryWriter(log_dir=str(self.location), purge_step=first_step)

    def log(self, step: int, scalars: dict[str, float], table: tuple | None) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)
        if table is not None:
            self.writer.add_text(TABLE_KEY, markdown_table(*table), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _Trackio:
    name = "trackio"

    def __init__(self, run_dir: Path, run_name: str, project: str, config: dict, offline: bool,
                 first_step: int = 1):
        # trackio reads $TRACKIO_DIR once, at import: the run folder unless the user chose one
        os.environ.setdefault("TRACKIO_DIR", str(run_dir / "trackio"))
        import trackio
        import trackio.utils

        self.trackio = trackio
        self.location = Path(trackio.utils.TRACKIO_DIR)
        self.project, self.run_name = project, run_name
        with contextlib.redirect_stdout(sys.stderr):  # its banners are not `madopd train` output
            self.run = trackio.init(project=project, name=run_name, config=config,
                                    resume="allow", embed=False, auto_log_gpu=False,
                                    auto_log_cpu=False, capture_console=False)

    def log(self, step: int, scalars: dict[str, float], table: tuple | None) -> None:
        self.run.log(dict(scalars), step=step)
        if table is not None:
            cols, rows = table
            self.run.log({TABLE_KEY: self.trackio.Table(columns=cols, data=rows)}, step=step)

    def close(self) -> None:
        with contextlib.redirect_stdout(sys.stderr):
            self.run.finish()


class _Wandb:
    name = "wandb"

    def __init__(self, run_dir: Path, run_name: str, project: str, config: dict, offline: bool,
                 first_step: int = 1):
        if offline:  # nothing may try the network: also the env for wandb's service process
            os.environ["WANDB_MODE"] = "offline"
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        self.wandb = wandb
        run_id = "madopd-" + hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:12]
        self.run = wandb.init(project=project, name=run_name, id=run_id, dir=str(run_dir),
                              config=config, resume="allow",
                              mode="offline" if offline else "online",
                              settings=wandb.Settings(console="off", x_disable_stats=True,
                                                      disable_git=True, save_code=False))
        self.location = Path(self.run.dir).parent  # RUN/wandb/offline-run-<time>-<id>

    def log(self, step: int, scalars: dict[str, float], table: tuple | None) -> None:
        data: dict[str, Any] = dict(scalars)
        if table is not None:
            cols, rows = table
            data[TABLE_KEY] = self.wandb.Table(columns=cols, data=rows)
        self.run.log(data, step=step)

    def close(self) -> None:
        self.run.finish()


BACKENDS = {"tensorboard": _TensorBoard, "trackio": _Trackio, "wandb": _Wandb}


# ------------------------------------------------------------------------ the collection
class Trackers:
    """The trackers of one run (main process only), with the failure policy and its counters."""

    def __init__(self, report_to: list[str], run_dir: str | Path, *, run_name: str | None = None,
                 project: str = "madopd", config: dict | None = None, offline: bool = True,
                 on_error: str = "continue", record_every: int = 1, all_samples: bool = True,
                 store: Any = None):
        if on_error not in ON_TRACKER_ERROR:
            raise ConfigError(f"field 'on_tracker_error' must be one of {list(ON_TRACKER_ERROR)}, "
                              f"got {on_error!r}")
        check_installed(report_to)
        self.run_dir = Path(run_dir)
        self.names = list(report_to)
        self.run_name = run_name or self.run_dir.name
        self.project, self.config, self.offline = project, dict(config or {}), offline
        self.on_error, self.record_every, self.all_samples = on_error, record_every, all_samples
        self.backends: dict[str, Any] = {}
        self.disabled: set[str] = set()
        self.references: dict[str, str | None] = {}
        self.store = store  # a RunStore: failures also go to its events.jsonl

    def _fail(self, name: str, exc: Exception, counters: dict[str, float]) -> None:
        if self.store is not None:  # the reason, once per failure, in RUN/events.jsonl
            self.store.log_event("tracker_error", tracker=name, policy=self.on_error,
                                 error=f"{type(exc).__name__}: {exc}"[:500])
        counters[f"count/tracking/{name}_errors"] = \
            counters.get(f"count/tracking/{name}_errors", 0) + 1
        if self.on_error == "raise":
            raise TrackerError(f"tracker {name!r} failed: {type(exc).__name__}: {exc} "
                               "(on_tracker_error='continue' or 'disable' keeps the run going)"
                               ) from exc
        if self.on_error == "disable":
            self.disabled.add(name)
            self.backends.pop(name, None)
            counters[f"count/tracking/{name}_disabled"] = 1

    def _backend(self, name: str, counters: dict[str, float], first_step: int) -> Any:
        if name not in self.backends:
            try:
                self.backends[name] = BACKENDS[name](self.run_dir, self.run_name, self.project,
                                                     self.config, self.offline, first_step)
            except Exception as exc:  # a tracker that cannot start must not end the run
                self._fail(name, exc, counters)
                return None
        return self.backends[name]

    def log(self, record: Any) -> dict[str, float]:
        """Send one step's record to every tracker; returns the counters to add to the step's
        metrics (cut table cells, tracker failures)."""
        counters: dict[str, float] = {}
        scalars = {k: float(v) for k, v in record.metrics.items()}
        if self.all_samples or (self.record_every and record.step % self.record_every == 0):
            scalars.update(token_shares(record))
        table = None
        if self.record_every and record.step % self.record_every == 0:
            cols, rows, cut = debate_table(record, self.references)
            counters.update(cut)
            table = (cols, rows)
        for name in self.names:
            if name in self.disabled:
                continue
            backend = self._backend(name, counters, record.step)
            if backend is None:
                continue
            try:
                backend.log(record.step, scalars, table)
            except Exception as exc:
                self._fail(name, exc, counters)
        return counters

    def close(self) -> dict[str, float]:
        """Finish every tracker (flushes W&B's and trackio's queues). A failure follows the
        same policy; its counters are returned (the caller adds them to the next line)."""
        counters: dict[str, float] = {}
        backends, self.backends = self.backends, {}
        for name, backend in backends.items():
            try:
                backend.close()
            except Exception as exc:
                self._fail(name, exc, counters)
        return counters


# ------------------------------------------------------------------------ Distiller hooks
def log_step(distiller: Any, record: Any) -> None:
    """Called by ``Distiller._log`` on the main process before ``metrics.jsonl`` is written:
    opens the trackers of ``config.report_to`` on first use and adds their counters to
    ``record.metrics``."""
    cfg = distiller.config
    if not cfg.report_to or distiller.store is None:
        return
    trackers = getattr(distiller, "_trackers", None)
    if trackers is None:
        trackers = distiller._trackers = Trackers(
            cfg.report_to, distiller.store.root, project=cfg.tracking_project,
            config=cfg.to_dict(), offline=cfg.tracking_offline, on_error=cfg.on_tracker_error,
            record_every=cfg.record_every,
            all_samples=distiller.accelerator.num_processes == 1, store=distiller.store)
        trackers.references = {s.id: s.reference for s in distiller.pool.items
                               if hasattr(s, "reference")}
    for key, value in trackers.log(record).items():
        record.metrics[key] = record.metrics.get(key, 0.0) + value


def close_trackers(distiller: Any) -> None:
    """Finish the Distiller's trackers (end of ``train``); the next step opens them again and
    they resume the same runs (W&B id and trackio name come from the run folder)."""
    trackers = getattr(distiller, "_trackers", None)
    if trackers is not None:
        distiller._trackers = None
        for key, value in trackers.close().items():  # into the next metrics line
            if distiller.store is not None:
                distiller.store.count(key, value)
