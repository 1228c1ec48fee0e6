"""The toy world's model zoo: tiny teachers with complementary skills and a Base student, cached.

``load_zoo(spec)`` returns a ``Zoo`` (building what is missing); ``madopd zoo build|info`` is the
command line. Every member (teacher A, B[, C], the student) is a real tiny Qwen3 causal LM
(``madopd.models.tiny``) trained from scratch on the toy tasks, one model serving both tasks.

Cache layout (root: ``$MADOPD_ZOO_DIR`` or ``~/.cache/madopd/zoo``)::

    members/<key>/            one trained member; key = hash of the settings that shape it
        model files, tokenizer, member.json (settings, timings, final loss)
        checksums.json        sha256 of every other file in the directory
    worlds/<key>.json         which members form a world + the held-out report

Robustness: a member is trained into ``members/<key>.partial-<pid>`` and renamed into place
only when complete (an interrupted build leaves no half member; the next build restarts it);
a member whose files no longer match ``checksums.json`` is reported, deleted and rebuilt.
A per-member lock file (``members/.<key>.lock``) keeps two builders from training the same
member at once; a ``.partial-*`` of a member whose lock we hold is a dead build and is removed.
Members train in parallel, one process per core (``torch.set_num_threads(1)``, spawn).

The default world (``ZooSpec()``): teachers A = {add, sub}, B = {max, min} (0.63M params, 800
steps), each knowing its own half of dst and stubborn on it, A confidently wrong on add traps;
the Base student (0.33M, 500 SFT steps) has the formats (tool calls, copying results) but picks
the operation uniformly at random in its SFT data (``student_skill=0``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from madopd.errors import ConfigError, DataError
from madopd.toyworld.progress import Phase, Ticker
from madopd.toyworld.toy_common import MERGED_TOKENS, TeacherSkill, world_skills

ZOO_FORMAT = 2  # 2: one split rule (toy_common.is_held_out), issue 13. Bump when training data or formats change: old caches are then ignored


@dataclass(frozen=True)
class ZooSpec:
    """Everything that shapes the zoo (its hash is the cache key)."""

    world: str = field(default="default", metadata={"help": "'default' (complementary) | 'blind' (shared blind spot)"})
    n_teachers: int = field(default=2, metadata={"help": "K = 2 or 3"})
    overlap: float = field(default=0.0, metadata={"help": "share of out-of-domain items a teacher knows"})
    calibration: str = field(default="calibrated", metadata={"help": "calibrated | overconfident | underconfident"})
    seed: int = 0
    teacher_hidden: int = 128
    teacher_layers: int = 3
    teacher_intermediate: int = 384
    student_hidden: int = 128
    student_layers: int = 2
    student_intermediate: int = 256
    teacher_steps: int = field(default=800, metadata={"help": "AdamW steps per teacher"})
    student_steps: int = field(default=500, metadata={"help": "Base SFT steps (format, copying)"})
    batch_size: int = 64
    lr: float = 2e-3
    student_skill: float = field(default=0.0, metadata={"help": "share of Base SFT data with the right op (the rest: uniform)"})
    tool_episodes: int = 1500
    noisy_episodes: int = 1200
    eval_episodes: int = 250
    debate_rounds: int = field(default=2, metadata={
        "help": "debate rounds the teachers are trained for (2: r1, r2 turns, s1, s2 scoring; "
                "3 adds r3/s3, for the round sweep's R = 3)"})
    code_world: str = field(default="single", metadata={
        "help": "'single': toy-code (one program per spec, both tasks trained); 'multi': "
                "toy-code-multi (2-3 correct forms per spec, sampled evenly; code only)"})

    def __post_init__(self):
        world_skills(self.world, self.n_teachers, self.overlap, self.calibration)  # validates
        if self.code_world not in ("single", "multi"):
            raise ConfigError(f"ZooSpec.code_world: expected 'single' or 'multi', got {self.code_world!r}")
        for name in ("teacher_steps", "student_steps", "batch_size", "tool_episodes", "eval_episodes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"ZooSpec.{name} must be >= 1, got {getattr(self, name)}")
        if self.debate_rounds < 1:
            raise ConfigError(f"ZooSpec.debate_rounds must be >= 1, got {self.debate_rounds}")
        if not 0.0 <= self.student_skill <= 1.0:
            raise ConfigError(f"ZooSpec.student_skill must be in [0, 1], got {self.student_skill}")

    def skills(self) -> list[TeacherSkill]:
        return world_skills(self.world, self.n_teachers, self.overlap, self.calibration)


PROFILES: dict[str, ZooSpec] = {
    "smoke": ZooSpec(teacher_hidden=64, teacher_layers=2, teacher_intermediate=128,
                     student_hidden=64, student_layers=1, student_intermediate=128,
                     teacher_steps=40, student_steps=20, batch_size=16, tool_episodes=200,
                     noisy_episodes=200, eval_episodes=40),
    # The notebooks' SMOKE world: the smoke sizes trained long enough to speak the toy grammar
    # (every turn parses, A knows add/sub, B max/min), cached. The student gets 800 SFT steps so
    # it has the tool formats (held-out episode success 0.26, the operation picked at random):
    # with 200 it copied nothing (0.04) and notebook 03's run could not show learning.
    "tutorial": ZooSpec(teacher_hidden=64, teacher_layers=2, teacher_intermediate=128,
                        student_hidden=64, student_layers=1, student_intermediate=128,
                        teacher_steps=600, student_steps=800, batch_size=32, tool_episodes=600,
                        noisy_episodes=600, eval_episodes=40),
    "default": ZooSpec(),
    "full": ZooSpec(),
    # the ablation profile's zoo: default sizes, teachers trained for 3 debate rounds (R sweep)
    "ablations": ZooSpec(debate_rounds=3),
    "ablations-smoke": ZooSpec(teacher_hidden=64, teacher_layers=2, teacher_intermediate=128,
                               student_hidden=64, student_layers=1, student_intermediate=128,
                               teacher_steps=40, student_steps=20, batch_size=16, tool_episodes=200,
                               noisy_episodes=200, eval_episodes=40, debate_rounds=3),
    # the multi-mode code world (issue 13.7): default sizes, code-only members (several correct
    # forms per spec, sampled evenly in every member's data); its tiny twin for tests
    "multimode": ZooSpec(code_world="multi", teacher_steps=600, student_steps=300),
    "multimode-smoke": ZooSpec(code_world="multi", teacher_hidden=64, teacher_layers=2,
                               teacher_intermediate=128, student_hidden=64, student_layers=1,
                               student_intermediate=128, teacher_steps=30, student_steps=15,
                               batch_size=16),
}

# How the zoo's teachers were trained to debate: the compact toy templates, greedy 12-token turns
# (``madopd.toyworld.demo`` uses the same). Other templates or sampling give them text they never saw.
TOY_DEBATE_TOKENS = 12


def profile_spec(profile: str, **overrides: Any) -> ZooSpec:
    if profile not in PROFILES:
        raise ConfigError(f"zoo profile {profile!r} is unknown; valid: {sorted(PROFILES)}")
    return replace(PROFILES[profile], **overrides)


def zoo_root(root: str | Path | None = None) -> Path:
    if root is not None:
        return Path(root)
    env = os.environ.get("MADOPD_ZOO_DIR")
    return Path(env) if env else Path.home() / ".cache" / "madopd" / "zoo"


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def make_tasks(spec: ZooSpec):
    """The (toy-tools, toy-code) tasks a zoo is trained and evaluated on."""
    from madopd.toyworld.toy_code import ToyCodeTask
    from madopd.toyworld.toy_tools import ToyToolsTask

    code = ToyCodeTask()
    if spec.code_world == "multi":  # canonical answer_with; same specs and split as toy-code
        from madopd.toyworld.toy_code_multi import ToyCodeMultiTask

        code = ToyCodeMultiTask()
    return (ToyToolsTask(n_train=spec.tool_episodes, n_eval=spec.eval_episodes, seed=0), code)


# --------------------------------------------------------------------------- members

def member_settings(spec: ZooSpec, member: str) -> dict:
    """The settings that shape one member (``member`` = a teacher name or 'student')."""
    common = dict(format=ZOO_FORMAT, seed=spec.seed, batch_size=spec.batch_size, lr=spec.lr,
                  tool_episodes=spec.tool_episodes, merged=list(MERGED_TOKENS))
    if spec.code_world != "single":  # only then: single-world members keep their keys
        common["code_world"] = spec.code_world
    if spec.debate_rounds != 2 and member != "student":  # the student never debates
        common["debate_rounds"] = spec.debate_rounds
    if member == "student":
        return dict(common, role="student", hidden=spec.student_hidden, layers=spec.student_layers,
                    intermediate=spec.student_intermediate, steps=spec.student_steps,
                    skill=spec.student_skill)
    skills = spec.skills()
    names = [s.name for s in skills]
    if member not in names:
        raise ConfigError(f"zoo member {member!r} is unknown; valid: {names + ['student']}")
    return dict(common, role="teacher", name=member, index=names.index(member),
                skills=[asdict(s) for s in skills], hidden=spec.teacher_hidden,
                layers=spec.teacher_layers, intermediate=spec.teacher_intermediate,
                steps=spec.teacher_steps, noisy_episodes=spec.noisy_episodes)


def _checksums(directory: Path) -> dict[str, str]:
    out = {}
    for p in sorted(directory.rglob("*")):
        if p.is_file() and p.name != "checksums.json":
            out[str(p.relative_to(directory))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def verify_member(directory: Path) -> str | None:
    """None when the member is intact, else what is wrong (missing, corrupted file...)."""
    sums = directory / "checksums.json"
    if not sums.exists():
        return f"{sums} is missing"
    try:
        expected = json.loads(sums.read_text())
    except ValueError:
        return f"{sums} is not valid JSON"
    actual = _checksums(directory)
    for name, digest in expected.items():
        if name not in actual:
            return f"{directory / name} is missing"
        if actual[name] != digest:
            return f"{directory / name} does not match its checksum"
    return None


def quiet_worker() -> None:
    """One torch thread per process; no per-file progress bars from transformers."""
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


def _train_member(settings: dict, out_dir: str, progress_file: str | None = None) -> dict:
    """Train one member into ``out_dir`` (runs in a worker process, one thread); its step count
    goes to ``progress_file`` (madopd.toyworld.progress), the caller draws the bar."""
    from madopd.toyworld.progress import Ticker
    from madopd.toyworld.zoo_train import train_member

    quiet_worker()
    return train_member(settings, Path(out_dir), ticker=Ticker(progress_file, settings["steps"]))


def build_members(spec: ZooSpec, members: list[str], *, root: Path, workers: int = 2,
                  force: bool = False, progress: bool = True, log=print) -> dict[str, Path]:
    """Make sure every member exists and is intact (training what is missing, in parallel).

    Holds one lock per member (``members/.<member>.lock``) so two builds never train the same
    member at once; a ``.partial-*`` directory of a member whose lock we hold is a dead build.
    """
    import fcntl
    from contextlib import ExitStack

    base = root / "members"
    base.mkdir(parents=True, exist_ok=True)
    keys = {m: f"{m}-{_hash(member_settings(spec, m))}" for m in members}
    with ExitStack() as stack:  # one lock per member (sorted: no deadlock between builders)
        held = {}
        for m, name in sorted(keys.items(), key=lambda kv: kv[1]):
            f = (base / f".{name}.lock").open("w")
            fcntl.flock(f, fcntl.LOCK_EX)
            for stale in base.glob(f"{name}.partial-*"):  # we hold its lock: a dead build's
                log(f"zoo: removing the unfinished build {stale}")
                if stale.is_dir():
                    shutil.rmtree(stale, ignore_errors=True)
                else:  # its progress file
                    stale.unlink(missing_ok=True)
            if not force and (base / name).exists() and verify_member(base / name) is None:
                f.close()  # intact: nothing to build, let other builders use the lock
                continue
            held[m] = name
            stack.enter_context(f)
        paths = {m: base / name for m, name in keys.items()}
        if held:
            paths.update(_build_locked(held, base, workers, force, progress, log, spec))
        return paths


def _build_locked(keys, base, workers, force, progress, log, spec) -> dict[str, Path]:
    paths, todo = {}, []
    for m, key in keys.items():
        path = base / key
        paths[m] = path
        if path.exists():
            problem = verify_member(path)
            if force or problem:
                if problem:
                    log(f"zoo: member {m} at {path} is corrupted ({problem}); rebuilding it")
                shutil.rmtree(path)
            else:
                continue
        todo.append(m)
    if not todo:
        return paths
    log(f"zoo: training {', '.join(todo)} ({min(workers, len(todo))} processes, 1 thread each)")
    jobs = []
    for m in todo:
        tmp = paths[m].with_name(paths[m].name + f".partial-{os.getpid()}")
        jobs.append((m, member_settings(spec, m), tmp))
    total = sum(settings["steps"] for _, settings, _ in jobs)

    def finish(m: str, tmp: Path, res: dict, phase: Phase) -> None:
        (tmp / "checksums.json").write_text(json.dumps(_checksums(tmp), indent=1))
        os.replace(tmp, paths[m])
        phase.log(f"zoo: {m} done in {res['seconds']:.0f} s ({res['cpu_seconds']:.0f} CPU-s, "
                  f"final loss {res['final_loss']:.4f})")

    with Phase(f"zoo ({len(jobs)} members)", total, unit="step", enabled=progress,
               log=log) as phase:
        if workers <= 1 or len(jobs) == 1:
            from madopd.toyworld.zoo_train import train_member

            for m, settings, tmp in jobs:
                ticker = Ticker(None, settings["steps"], on_update=phase.update)
                finish(m, tmp, train_member(settings, tmp, ticker=ticker), phase)
            return paths
        import multiprocessing as mp

        files = [tmp.with_name(tmp.name + ".progress") for _, _, tmp in jobs]
        # teachers first (longest), so the short student run fills the gap at the end
        try:
            with ProcessPoolExecutor(max_workers=min(workers, len(jobs)),
                                     mp_context=mp.get_context("spawn")) as pool:
                futs = {pool.submit(_train_member, settings, str(tmp), str(f)): (m, tmp)
                        for (m, settings, tmp), f in zip(jobs, files)}
                for fut in phase.as_completed(list(futs), files):
                    finish(*futs[fut], fut.result(), phase)
        finally:
            for f in files:
                f.unlink(missing_ok=True)
    return paths


# --------------------------------------------------------------------------- the zoo

@dataclass
class Zoo:
    """A built world: member directories, the skills the teachers were trained to have, a report."""

    spec: ZooSpec
    teacher_paths: list[Path]
    student_path: Path
    report: dict
    manifest: Path

    @property
    def skills(self) -> list[TeacherSkill]:
        return self.spec.skills()

    @property
    def teacher_names(self) -> list[str]:
        return [s.name for s in self.skills]

    def teachers(self, **kw):
        from madopd.models.hf import HFTeacher

        kw.setdefault("batch_size", 256)
        return [HFTeacher(str(p), name=n, **kw) for n, p in zip(self.teacher_names, self.teacher_paths)]

    def student(self, **kw):
        from madopd.models.hf import HFStudent

        kw.setdefault("batch_size", 256)
        return HFStudent(str(self.student_path), name="student", **kw)

    def tasks(self):
        return make_tasks(self.spec)

    def debate_protocol(self, rounds: int = 2, **kw):
        """The protocol the teachers were trained on: toy templates, greedy 12-token turns."""
        from madopd.debate import DebateProtocol
        from madopd.toyworld.toy_common import toy_templates
        from madopd.types import Sampling

        return DebateProtocol(rounds=rounds, templates=toy_templates(),
                              sampling=Sampling(greedy=True, max_new_tokens=TOY_DEBATE_TOKENS), **kw)

    def config(self, method: str = "mad_opd", **fields):
        """A ``DistillConfig`` for this zoo with the demo's settings (student samples 12 tokens at
        T = 1, greedy debate turns, JSD(0.5), CPU); ``fields`` override any of them."""
        from madopd.distill import preset
        from madopd.types import Sampling

        base = dict(student=str(self.student_path), teachers=[str(p) for p in self.teacher_paths],
                    teacher_names=self.teacher_names, device="cpu", cpu=True, lr=2e-3,
                    sampling=Sampling(temperature=1.0, max_new_tokens=TOY_DEBATE_TOKENS),
                    debate_sampling=Sampling(greedy=True, max_new_tokens=TOY_DEBATE_TOKENS),
                    divergence="jsd", beta=0.5, checkpoint_every=0, verify_train=True)
        return preset(method, {**base, **fields})


def _spec_key(spec: ZooSpec) -> dict:
    """The spec as hashed for a world's manifest; fields at their pre-existing default are left
    out, so adding a field does not re-evaluate every cached world."""
    d = asdict(spec)
    if d["code_world"] == "single":
        del d["code_world"]
    if d["debate_rounds"] == 2:
        del d["debate_rounds"]
    return d


def load_zoo(spec: ZooSpec | None = None, *, root: str | Path | None = None, workers: int = 2,
             force: bool = False, progress: bool = True, log=print) -> Zoo:
    """Load the zoo for ``spec`` from the cache, building (or repairing) what is missing."""
    spec = spec or ZooSpec()
    root = zoo_root(root)
    names = [s.name for s in spec.skills()]
    t0 = time.perf_counter()
    paths = build_members(spec, names + ["student"], root=root, workers=workers, force=force,
                          progress=progress, log=log)
    key = _hash(_spec_key(spec) | {"format": ZOO_FORMAT})
    manifest = root / "worlds" / f"{spec.world}-{key}.json"
    report = None
    if manifest.exists() and not force:
        try:
            data = json.loads(manifest.read_text())
            if data.get("members") == {m: p.name for m, p in paths.items()}:
                report = data["report"]
        except (ValueError, KeyError):
            log(f"zoo: {manifest} is unreadable; re-evaluating")
    zoo = Zoo(spec, [paths[n] for n in names], paths["student"], report or {}, manifest)
    if report is None:
        from madopd.toyworld.zoo_eval import evaluate_zoo

        log("zoo: evaluating the members on held-out items ...")
        zoo.report = evaluate_zoo(zoo, n_tool_episodes=min(60, spec.eval_episodes),
                                  progress=progress, log=log)
        zoo.report["build_seconds"] = round(time.perf_counter() - t0, 1)
        manifest.parent.mkdir(parents=True, exist_ok=True)
        tmp = manifest.with_suffix(".tmp")
        tmp.write_text(json.dumps({"spec": asdict(spec), "members": {m: p.name for m, p in paths.items()},
                                   "report": zoo.report}, indent=1))
        os.replace(tmp, manifest)
    return zoo


def read_manifest(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"zoo manifest: {e}", path=str(path)) from e

