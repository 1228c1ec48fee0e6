"""`madopd demo --world real`: OPD, MT-OPD and MAD-OPD with real SmolLM2 teachers that differ.

Teachers: the real zoo (``madopd.realworld.zoo``): K = 2 SmolLM2-135M-Instruct teachers, each
fine-tuned on one skill group of ``house-calls`` (``madopd.realworld.house``: function calls
whose value formats are unstated house conventions), tagging ``<<CONFIDENCE=N>>`` and trained
to adopt a confident peer. Student: the base model with the first 8 and last 8 of its 30
decoder layers (``madopd.models.family.shrink_layers``: 16 layers, 85M parameters, same
tokenizer and chat template). Held-out: the task's 64 items (values never in training).

Rows (all from the same student start, same steps, same divergence JSD(0.5), Remark 1):
Base (the format warm-up only: ``madopd.realworld.warmup``, shared by every row), OPD-A / OPD-B (one teacher), MT-OPD (both, uniform, no debate), MAD-OPD
(both, R = 1 debate round, confidence weights from the written tags), and each teacher
answering blind (evaluation only). Columns: call accuracy (%) and the per-token NLL of the
reference call under the student (nats). The weights are 4-bit quantized (quantization
noise); timings are from shared, loaded CPUs unless stated. The personas of the earlier real
world (``PERSONAS``, ``_protocol``) remain for the committed transcripts and benchmarks.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from madopd.realworld.table import BLIND_ROWS, ROWS, eval_items, format_real_table, summarize_real
from madopd.realworld.warmup import WarmupSpec
from madopd.types import Sampling

__all__ = ["ROWS", "format_real_table", "resummarize", "run_real_demo", "summarize_real"]

TEACHER = "smollm2-135m-instruct"
PERSONAS = ("Ada, a meticulous API engineer who checks every argument against the spec",
            "Ben, a terse assistant who answers with the call and nothing else",
            "Cy, a sceptical reviewer who looks for wrong or missing arguments")


@dataclass(frozen=True)
class RealProfile:
    zoo: str = "default"  # madopd.realworld.zoo.PROFILES
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 8
    batch_size: int = 4
    lr: float = 1e-4
    train_states: int | None = None  # None = all (192)
    eval_states: int | None = None  # None = all 64
    debate_tokens: int = 48
    answer_tokens: int = 24
    threads: int = 1
    confidence_fallback: str = "forced_tag"  # madopd.confidence: the source of untagged turns
    # the student's format warm-up (madopd.realworld.warmup: naive calls, syntax only), shared
    # by every row (part of Base); steps=0: none
    warmup: WarmupSpec = WarmupSpec()
    bootstrap_reps: int = 2000
    # items resampled within their family ("family", the split's design: a fixed number per
    # family) or as one pool ("none": families count as sampled too); madopd.realworld.table.STRATA
    bootstrap_strata: str = "none"

    def __post_init__(self):  # checked before any model loads, not after the last job
        from madopd.errors import ConfigError
        from madopd.realworld.table import STRATA

        if self.bootstrap_strata not in STRATA:
            raise ConfigError(f"bootstrap_strata: expected one of {STRATA}, got {self.bootstrap_strata!r}")
        if self.bootstrap_reps < 100:
            raise ConfigError(f"bootstrap_reps: expected >= 100, got {self.bootstrap_reps}")


REAL_PROFILES = {
    # eval_states=16: every 4th held-out item (2 per function), train_states=8: one per function
    # smoke: a shorter warm-up (its own cache key) to keep CI's cold run near its budget
    "smoke": RealProfile(seeds=(0,), steps=2, batch_size=2, train_states=8, eval_states=16,
                         debate_tokens=40, answer_tokens=32, warmup=WarmupSpec(steps=12)),
    "default": RealProfile(steps=6, train_states=64, debate_tokens=40, answer_tokens=32),
    "full": RealProfile(seeds=(0, 1, 2), steps=24, lr=5e-5, debate_tokens=40, answer_tokens=32),
}


# Which of the teacher's 30 layers the student keeps. Measured (reference-call NLL on 8 held-out
# states, nats/token; the teacher: 1.10): every 2nd layer 15.9, every 3rd 10 layers 17.3, drop
# every 3rd 14.4, drop every 5th 9.3, first 8 + last 8 = 8.0, first 10 + last 10 = 5.9,
# first 12 + last 8 = 4.6. Middle layers are the most redundant; the 16-layer student leaves
# the teacher room to teach.
STUDENT_LAYERS = tuple(range(8)) + tuple(range(22, 30))


def student_path(keep: tuple[int, ...] = STUDENT_LAYERS) -> Path:
    """The shrunk student in the model cache (built once from the cached teacher)."""
    import hashlib

    from madopd.models.catalogue import cache_root, resolve_model_path
    from madopd.models.family import shrink_layers

    tag = hashlib.sha256("-".join(str(i) for i in keep).encode()).hexdigest()[:8]
    out = cache_root() / f"{TEACHER}-layers{len(keep)}-{tag}"
    if not (out / "madopd_family.json").is_file():
        shrink_layers(resolve_model_path(TEACHER), out, keep=list(keep))
    return out


class _Subset:
    """A task view with at most n train / eval states (the smoke profile)."""

    def __init__(self, task: Any, n_train: int | None, n_eval: int | None):
        self._task, self._n_train, self._n_eval = task, n_train, n_eval
        self.kind, self.name = task.kind, task.name

    @staticmethod
    def _spread(states: list, n: int | None) -> list:
        """n states spread evenly over the list (the task lists them function by function, so
        every function keeps its share); all when n is None or >= the length."""
        if n is None or n >= len(states):
            return states
        return [states[(i * len(states)) // n] for i in range(n)]

    def train_states(self):
        return self._spread(self._task.train_states(), self._n_train)

    def eval_states(self):
        return self._spread(self._task.eval_states(), self._n_eval)

    def verify(self, state, response):
        return self._task.verify(state, response)


def _protocol(rounds: int, profile: RealProfile):
    from madopd.debate import TEMPLATES, DebateProtocol

    tpl = dataclasses.replace(TEMPLATES["tool_use"], system="You are {name}.")
    return DebateProtocol(rounds=rounds, templates=tpl,
                          confidence_fallback=profile.confidence_fallback,
                          sampling=Sampling(greedy=True, max_new_tokens=profile.debate_tokens))


def _config(row: str, profile: RealProfile, student: str, seed: int, cache: str,
            zoo: Any = None):
    from madopd.distill import preset

    paths = [str(p) for p in zoo.member_paths()] if zoo is not None else [TEACHER] * 3
    names = zoo.names if zoo is not None else list(PERSONAS)
    base = dict(student=student, teachers=paths, teacher_names=names,
                device="cpu", cpu=True, lr=profile.lr, max_steps=profile.steps,
                batch_size=profile.batch_size, seed=seed, divergence="jsd", beta=0.5,
                sampling=Sampling(temperature=1.0, max_new_tokens=profile.answer_tokens),
                debate_sampling=Sampling(greedy=True, max_new_tokens=profile.debate_tokens),
                checkpoint_every=0, record_every=0, verify_train=True, debate_cache=True,
                debate_cache_path=cache, warmup_ratio=0.0, schedule="constant",
                confidence_fallback=profile.confidence_fallback)
    name, fields = {"Base": ("base", {}), "OPD-A": ("opd", {}), "OPD-B": ("opd", {}),
                    "MT-OPD": ("mt_opd", {"rounds": 0, "weighting": "uniform"}),
                    "MAD-OPD": ("mad_opd", {"rounds": 1, "weighting": "confidence"})}[row]
    return preset(name, base, **fields)


def reference_nll(student: Any, states: list) -> list[float]:
    """Per-state mean NLL (nats/token) of the reference call under the student (teacher-forced)."""
    tok = student.tokenizer
    conts = [list(tok(s.reference, add_special_tokens=False)["input_ids"]) + [tok.eos_token_id]
             for s in states]
    sc = student.score([s.messages for s in states], conts)
    out = []
    for b, c in enumerate(conts):
        lp = sc.dists[b, : len(c)].gather(-1, torch.tensor(c).view(-1, 1)).squeeze(-1)
        out.append(float(-lp.double().mean()))
    return out


def make_teachers(teacher_model: Any) -> list[Any]:
    """The three personas: one set of weights, three HFTeacher views (names = personas)."""
    from madopd.models.catalogue import resolve_model_path
    from madopd.models.hf import HFTeacher

    path = resolve_model_path(TEACHER)
    return [HFTeacher(teacher_model, path, name=n, batch_size=16) for n in PERSONAS]


def _zoo_protocol(zoo: Any, rounds: int, profile: RealProfile):
    """The zoo teachers' debate: the texts they were trained on (``HOUSE_TEMPLATES``), greedy."""
    return dataclasses.replace(zoo.debate_protocol(rounds), sampling=Sampling(
        greedy=True, max_new_tokens=profile.debate_tokens))


def warm_debates(teachers: list[Any], profile: RealProfile, task: Any, cache_path: Path,
                 log=print, zoo: Any = None) -> dict[str, Any]:
    """Debate every train state once, before any training, into the shared cache file.

    The debate sees the state only (never the student), so its transcripts serve every
    MAD-OPD job of every seed. One batch of all states per persona (instead of the training
    batch of 4 per step) amortises generation's per-token overhead; the Distillers then only
    read the cache (their hits are counted as ``count/cache_hits``).
    """
    from madopd.cache import DebateCache, warm_cache
    from madopd.debate import Debate

    t0, c0 = time.perf_counter(), time.process_time()
    debate = Debate(teachers, _zoo_protocol(zoo, 1, profile), names=zoo.names)
    states = task.train_states()
    stats = warm_cache(debate, states, DebateCache(cache_path), batch_size=len(states),
                       progress=False)
    info = {"states": len(states), **stats, "counters": dict(debate.counters),
            "wall_seconds": round(time.perf_counter() - t0, 1),
            "cpu_seconds": round(time.process_time() - c0, 1)}
    log(f"  debate of {len(states)} train states x {len(teachers)} teachers: "
        f"{info['wall_seconds']:.0f} s wall, {info['cpu_seconds']:.0f} s CPU "
        f"({stats['cache_hits']} already cached)")
    return info


def run_blind_teacher(row: str, teacher: Any, profile: RealProfile, task: Any) -> dict[str, Any]:
    """A zoo teacher answering the held-out items blind (the student's prompt), evaluated like a
    student (greedy): the single-teacher ceiling of its group."""
    t0, c0 = time.perf_counter(), time.process_time()
    states = task.eval_states()
    texts = teacher.generate([s.messages for s in states],
                             Sampling(greedy=True, max_new_tokens=profile.debate_tokens))
    return {"row": row, "seed": profile.seeds[0], "teacher": teacher.name,
            "accuracy": [float(task.verify(st, t)) for st, t in zip(states, texts)],
            "ref_nll": reference_nll(teacher, states), "answers": texts[:4],
            "train_seconds": 0.0, "seconds": round(time.perf_counter() - t0, 1),
            "cpu_seconds": round(time.process_time() - c0, 1), "counters": {},
            "final_loss": None}


def run_real_job(row: str, seed: int, profile: RealProfile, student: str, task: Any,
                 teachers: list[Any], out: Path,
                 score_caches: dict[str, Any] | None = None, zoo: Any = None) -> dict[str, Any]:
    """Train one row from the shared student start with one seed; evaluate on the held-out states.

    ``score_caches`` (persona -> PrefixKVCache) carries the teachers' scoring-context caches
    from one seed of a row to the next: the contexts (state + cached debate + cue) are the same
    for every seed, so a later seed re-encodes only the student's tokens (hits counted in
    ``count/score_cache/hits``). The teachers are frozen, so the entries stay valid (the cache
    checks the weights' version counters anyway).
    """
    from madopd.distill import Distiller
    from madopd.models.hf import HFStudent

    t0, c0 = time.perf_counter(), time.process_time()
    torch.manual_seed(seed)
    cfg = _config(row, profile, student, seed, str(out / "debate-cache.jsonl"), zoo)
    s = HFStudent(student, name="student", batch_size=16)
    if row == "OPD-A":
        teachers = teachers[:1]
    elif row == "OPD-B":
        teachers = teachers[1:2]
        cfg = dataclasses.replace(cfg, teachers=cfg.teachers[1:2],
                                  teacher_names=cfg.teacher_names[1:2])
    proto = _zoo_protocol(zoo, cfg.rounds, profile) if zoo is not None else _protocol(cfg.rounds, profile)
    d = Distiller(cfg, s, teachers if row != "Base" else [], task,
                  debate_protocol=proto if row != "Base" else None)
    if score_caches is not None:  # the Distiller gave each teacher a fresh cache: keep the old
        for t in d.teachers:
            if getattr(t, "prefix_cache", None) is not None:
                t.prefix_cache = score_caches.setdefault(t.name, t.prefix_cache)
    records = d.train(progress=False) if row != "Base" else []
    t_train = time.perf_counter() - t0
    states = task.eval_states()
    samples = s.rollout(states, Sampling(greedy=True, max_new_tokens=profile.answer_tokens))
    acc = [float(task.verify(st, t)) for st, t in zip(states, samples.texts)]
    nll = reference_nll(s, states)
    counts: dict[str, float] = {}
    for r in records:
        for k, v in r.metrics.items():
            if k.startswith(("count/debate/", "weights/", "count/weights/", "count/cache_",
                             "count/score_cache/")):
                counts[k] = counts.get(k, 0.0) + float(v)
            if k.startswith("time/"):
                counts[k] = round(counts.get(k, 0.0) + float(v), 2)
    return {"row": row, "seed": seed, "accuracy": acc, "ref_nll": nll,
            "answers": samples.texts[:4], "all_answers": samples.texts, "train_seconds": round(t_train, 1),
            "seconds": round(time.perf_counter() - t0, 1),
            "cpu_seconds": round(time.process_time() - c0, 1), "counters": counts,
            "final_loss": records[-1].loss if records else None}


def resummarize(results_json: str | Path, *, reps: int | None = None, seed: int = 0,
                strata: str | None = None) -> dict[str, Any]:
    """The table of a saved ``results.json`` recomputed from its per-run lists; writes nothing.

    The held-out items' ids and families come from the file's ``eval_items``; a file written
    before that field existed gets them from ``RealCallsTask`` and the profile's
    ``eval_states`` (said in ``items_source``; the count is checked against the runs).
    ``reps`` and ``strata`` default to the profile's ``bootstrap_reps`` / ``bootstrap_strata``
    (2000 / "none" for a file that has neither). Format it with ``format_real_table``.
    """
    from madopd.errors import DataError
    from madopd.runs import read_json_file

    path = Path(results_json)
    data = read_json_file(path)
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list) or not data["runs"]:
        raise DataError("expected a real-world results.json with a non-empty 'runs' list",
                        path=str(path), field="runs")
    settings = data.get("profile_settings", {})
    items, source = data.get("eval_items"), "results.json eval_items"
    if items is None:
        from madopd.realworld.calls import RealCallsTask

        items = eval_items(RealCallsTask().eval_states()[: settings.get("eval_states")])
        source = "RealCallsTask().eval_states() (this results.json predates eval_items)"
        n = len(data["runs"][0]["accuracy"])
        if len(items["ids"]) != n:
            raise DataError(f"the runs have {n} held-out items, the task gives "
                            f"{len(items['ids'])}", path=str(path), field="eval_items")
    out = summarize_real(data["runs"], items["ids"], items["families"], seed=seed,
                         reps=int(reps or settings.get("bootstrap_reps", 2000)),
                         strata=strata or settings.get("bootstrap_strata", "none"))
    out.update(items_source=source, source=str(path), profile=data.get("profile"),
               title=real_title(data.get("profile"), personas="zoo" not in data))
    return out


def real_title(profile: str | None, personas: bool = False) -> str:
    """The table's title; ``personas``: a results.json of the earlier persona world (no zoo)."""
    who = f"{TEACHER} x3 personas" if personas else f"2 house-calls {TEACHER} teachers"
    return (f"real world ({who} -> 16-layer student), profile {profile}: "
            "mean [95 % bootstrap interval]")


def run_real_demo(profile_name: str = "smoke", *, out: str | Path = "madopd-out/real",
                  log=print, threads: int | None = None, zoo_root: str | Path | None = None,
                  workers: int = 2) -> dict[str, Any]:
    from madopd.errors import ConfigError
    from madopd.realworld.warmup import warmed_student
    from madopd.realworld.zoo import load_real_zoo, profile_spec
    from madopd.realworld.zoo_eval import format_zoo_report, zoo_targets

    if profile_name not in REAL_PROFILES:
        raise ConfigError(f"real demo profile {profile_name!r} is unknown; valid: {sorted(REAL_PROFILES)}")
    profile = REAL_PROFILES[profile_name]
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads: expected >= 1, got {threads}")
        profile = dataclasses.replace(profile, threads=int(threads))
    torch.set_num_threads(profile.threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0, c0 = time.perf_counter(), time.process_time()
    # the zoo first: a missing model is one ModelCacheError with the pull hint; a missing or
    # corrupted member is named and rebuilt (its own processes, one thread each)
    zoo = load_real_zoo(profile_spec(profile.zoo), root=zoo_root, workers=workers, log=log)
    t_zoo = time.perf_counter() - t0
    student_dir, warmup = warmed_student(profile.warmup, student_path(), STUDENT_LAYERS,
                                         zoo.task(), log=log)
    student = str(student_dir)
    task = _Subset(zoo.task(), profile.train_states, profile.eval_states)
    teachers = zoo.teachers(batch_size=16)
    t_load = time.perf_counter() - t0
    log(f"demo[real/{profile_name}]: zoo {zoo.spec.key()} and models ready in {t_load:.0f} s; "
        f"{len(ROWS)} rows x {len(profile.seeds)} seeds, {profile.steps} steps of batch "
        f"{profile.batch_size}, {len(task.eval_states())} held-out items")
    cache_path = out / "debate-cache.jsonl"
    debate_info = warm_debates(teachers, profile, task, cache_path, log, zoo=zoo)
    results = []
    for row in ROWS:  # row-major: a row's seeds share the teachers' scoring-context caches
        caches: dict[str, Any] = {}
        first = None
        for seed in profile.seeds:
            if first is not None and (row == "Base" or row in BLIND_ROWS):
                # no training, greedy eval: the same for every seed (counted once in the table)
                res = dict(first, seed=seed, reused_from_seed=first["seed"], seconds=0.0,
                           cpu_seconds=0.0)
            elif row in BLIND_ROWS:
                res = dict(run_blind_teacher(row, teachers[BLIND_ROWS.index(row)], profile, task),
                           seed=seed)
            else:
                res = run_real_job(row, seed, profile, student, task, teachers, out, caches, zoo)
            first = first or res
            results.append(res)
            log(f"  {row:<18} seed {seed}: acc {100 * sum(res['accuracy']) / len(res['accuracy']):5.1f} %, "
                f"ref NLL {sum(res['ref_nll']) / len(res['ref_nll']):.3f} ({res['seconds']:.0f} s "
                f"wall, {res['cpu_seconds']:.0f} s CPU)")
    items = eval_items(task.eval_states())
    table = summarize_real(results, items["ids"], items["families"], reps=profile.bootstrap_reps,
                           strata=profile.bootstrap_strata)
    table.update(profile=profile_name, title=real_title(profile_name))
    summary = {"world": "real", "profile": profile_name, "profile_settings": asdict(profile),
               "teacher": TEACHER, "zoo": {"key": zoo.spec.key(), "spec": asdict(zoo.spec),
                                           "folder": str(zoo.folder), "report": zoo.report,
                                           "targets": zoo_targets(zoo.report)},
               "teachers": zoo.names, "student": student, "warmup": warmup,
               "note": "4-bit quantized weights (GGUF Q4_1, de-quantized to fp32); loaded CPU",
               "wall_seconds": round(time.perf_counter() - t0, 1), "load_seconds": round(t_load, 1),
               "zoo_seconds": round(t_zoo, 1),
               "cpu_seconds": round(time.process_time() - c0, 1), "debate": debate_info,
               "eval_items": items, "table": table, "runs": results}
    text = format_zoo_report(zoo.report) + "\n\n" + format_real_table(table)
    text += (f"\nwall time {summary['wall_seconds']:.0f} s (zoo {t_zoo:.0f} s, loading "
             f"{t_load - t_zoo:.0f} s, debate {debate_info['wall_seconds']:.0f} s), process CPU "
             f"{summary['cpu_seconds']:.0f} s on {profile.threads} thread(s) (zoo training in its "
             "own processes, counted in the zoo report); weights 4-bit quantized")
    (out / "results.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "table.txt").write_text(text + "\n")
    log(text)
    log(f"wrote {out / 'results.json'}, {out / 'table.txt'}")
    return summary


# --------------------------------------------------------------------------- committed transcripts

TRANSCRIPTS = Path(__file__).resolve().parent / "data" / "real_debates.json"


def record_transcripts(path: str | Path = TRANSCRIPTS, n_states: int = 3, rounds: int = 2,
                       max_new_tokens: int = 48) -> Path:
    """Debate ``n_states`` real-calls states with the three SmolLM2 personas and save them.

    Run once to refresh the committed file (``python -c "from madopd.realworld.world import
    record_transcripts; record_transcripts()"``, ~2 min loaded); notebooks and widgets read it
    with ``load_real_debates`` so SMOKE mode can show real text without the model.
    """
    from transformers import AutoModelForCausalLM

    from madopd.debate import Debate, transcript_to_dict
    from madopd.models.catalogue import resolve_model_path
    from madopd.models.hf import HFTeacher
    from madopd.realworld.calls import RealCallsTask

    folder = resolve_model_path(TEACHER)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    teachers = [HFTeacher(model, folder, name=n) for n in PERSONAS]
    profile = dataclasses.replace(RealProfile(), debate_tokens=max_new_tokens)
    debate = Debate(teachers, _protocol(rounds, profile), names=["Ada", "Ben", "Cy"])
    states = RealCallsTask().eval_states()[::5][:n_states]
    trs = debate.run(states)
    data = {"format": "madopd.real-debates/1", "model": TEACHER, "personas": list(PERSONAS),
            "note": "SmolLM2-135M-Instruct, 4-bit quantized (GGUF Q4_1); greedy; confidences "
                    "without a tag come from forced_tag (expected value)",
            "counters": debate.counters,
            "debates": [{"state": {"id": s.id, "messages": s.messages, "reference": s.reference,
                                   "family": s.family},
                         "transcript": transcript_to_dict(tr),
                         "score_contexts": [debate.score_context(s, tr, k) for k in range(3)]}
                        for s, tr in zip(states, trs)]}
    Path(path).write_text(json.dumps(data, indent=1, ensure_ascii=False))
    return Path(path)


def load_real_debates(path: str | Path = TRANSCRIPTS) -> list[dict[str, Any]]:
    """The committed SmolLM2 debates: [{"state": State, "transcript": Transcript,
    "score_contexts": [chat per teacher]}] (text verbatim: escape it when rendering)."""
    from madopd.debate import transcript_from_dict
    from madopd.errors import DataError
    from madopd.types import State

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read the real debates: {e}", path=str(path)) from e
    if data.get("format") != "madopd.real-debates/1":
        raise DataError("unsupported format", path=str(path), field="format")
    return [{"state": State(**d["state"]), "transcript": transcript_from_dict(d["transcript"]),
             "score_contexts": d["score_contexts"]} for d in data["debates"]]
