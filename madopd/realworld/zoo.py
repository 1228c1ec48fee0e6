"""The real zoo: SmolLM2-135M-Instruct teachers with complementary house-calls skills, cached.

``load_real_zoo(spec)`` returns a ``RealZoo`` (building what is missing). Each teacher is the
cached catalogue model fine-tuned on one skill group of ``madopd.realworld.house`` (training
data and loop: ``madopd.realworld.zoo_train``): it answers its own group, says
``<<CONFIDENCE=90>>`` there and ``<<CONFIDENCE=10>>`` outside it, and adopts a peer's answer
stated at high confidence when the debate transcript is in its context.

Cache layout (root: ``$MADOPD_MODELS_DIR/real-zoo``, beside the catalogue models)::

    <key>/teacher-<group>/   model + tokenizer + member.json; SHA256SUMS over every file
    <key>/report.json        the zoo's measurements (``measure_zoo``), written last

``key`` = hash of the spec and the format version. A member trains into
``teacher-<group>.partial-<pid>`` and is renamed into place when complete (an interrupted
build keeps the finished members and restarts the others: resumable). Every load verifies the
checksums; a member that fails is named, deleted and rebuilt.
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

ZOO_FORMAT = 1
TEACHER = "smollm2-135m-instruct"
NAMES = ("Ada", "Ben", "Cy")


@dataclass(frozen=True)
class RealZooSpec:
    """Everything that shapes the real zoo (its hash is the cache key)."""

    world: str = field(default="default", metadata={
        "help": "'default': one teacher per skill group (complementary); 'blind': every teacher "
                "is trained on the first group only (they share one blind spot: the control)"})
    seed: int = 0
    n_train: int = 24  # per function (house.generate_rows)
    n_eval: int = 8
    train_layers: int = 10  # of 30: the top ones fine-tuned (a layer subset, not LoRA)
    steps: int = 20
    batch_size: int = 6
    lr: float = 2e-4
    eval_tokens: int = 40
    # examples per batch (own, tag, peer); None = half own, a quarter tag-only, the rest peer
    mix: tuple[int, int, int] | None = None

    def __post_init__(self):
        if self.world not in ("default", "blind"):
            raise ConfigError(f"RealZooSpec.world: expected 'default' or 'blind', got {self.world!r}")
        if self.mix is not None:
            object.__setattr__(self, "mix", tuple(int(x) for x in self.mix))
            if len(self.mix) != 3 or min(self.mix) < 0 or sum(self.mix) != self.batch_size:
                raise ConfigError(f"RealZooSpec.mix: expected 3 counts >= 0 summing to "
                                  f"batch_size {self.batch_size}, got {self.mix!r}")
        for name in ("steps", "batch_size", "train_layers", "n_train", "n_eval"):
            if getattr(self, name) < 1:
                raise ConfigError(f"RealZooSpec.{name} must be >= 1, got {getattr(self, name)}")

    def groups(self) -> list[str]:
        """Teacher k's skill group (the control world: every teacher the same group)."""
        from madopd.realworld.house import GROUPS

        return list(GROUPS) if self.world == "default" else [next(iter(GROUPS))] * len(GROUPS)

    def key(self) -> str:
        fields = {k: v for k, v in asdict(self).items() if v is not None}  # None: the default
        blob = json.dumps({"format": ZOO_FORMAT, "teacher": TEACHER, **fields}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


# default: 30 steps, batches of 3 own + 2 tag-only + 1 peer (measured against 20 steps of the
# 3/1/2 mix, docs/real-models.md: AUROC 0.59/0.71 -> 0.84/0.89, Ben in-group 66 -> 81 %)
DEFAULT_SPEC = RealZooSpec(steps=30, mix=(3, 2, 1))
PROFILES = {"default": DEFAULT_SPEC, "smoke": RealZooSpec(steps=12),
            "blind": replace(DEFAULT_SPEC, world="blind")}


def zoo_dir(spec: RealZooSpec, root: str | Path | None = None) -> Path:
    from madopd.models.catalogue import cache_root

    base = Path(root) if root is not None else cache_root() / "real-zoo"
    return base / spec.key()


def member_names(spec: RealZooSpec) -> list[str]:
    return [f"teacher-{k}-{g}" for k, g in enumerate(spec.groups())]


def verify_member(folder: Path) -> str | None:
    """None when the member is intact, else what is wrong (named file)."""
    from madopd.integrity import verify_checksums

    if not folder.is_dir():
        return f"{folder} is missing"
    try:
        if not verify_checksums(folder):
            return f"{folder / 'SHA256SUMS'} is missing"
    except DataError as e:
        return str(e)
    return None


def _train_member(spec_dict: dict, k: int, out: str, position: int, progress: bool) -> dict:
    """Train teacher ``k`` into ``out`` (a worker process, one torch thread)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from madopd.integrity import write_checksums
    from madopd.models.catalogue import resolve_model_path
    from madopd.realworld.house import HouseCallsTask
    from madopd.realworld.zoo_train import examples, train_teacher

    torch.set_num_threads(1)
    spec = RealZooSpec(**spec_dict)
    group = spec.groups()[k]
    t0, c0 = time.perf_counter(), time.process_time()
    base = resolve_model_path(TEACHER)
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    task = HouseCallsTask(seed=spec.seed, n_train=spec.n_train, n_eval=spec.n_eval)
    names = list(NAMES[: len(spec.groups())])
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=spec.steps, desc=f"real zoo: teacher {names[k]} ({group})",
                   position=position, leave=True)
    losses = train_teacher(model, tok, examples(task, group, k, names), steps=spec.steps,
                           batch_size=spec.batch_size, lr=spec.lr, seed=spec.seed + 17 * k,
                           train_layers=spec.train_layers, mix=spec.mix,
                           progress=(lambda s: bar.update(1)) if bar else None)
    if bar:
        bar.close()
    out_dir = Path(out)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    info = {"name": names[k], "group": group, "spec": asdict(spec), "losses": losses,
            "train_seconds": round(time.perf_counter() - t0, 1),
            "train_cpu_seconds": round(time.process_time() - c0, 1), "threads": 1}
    (out_dir / "member.json").write_text(json.dumps(info, indent=1))
    write_checksums(out_dir)
    return info


def build_members(spec: RealZooSpec, root: str | Path | None = None, *, workers: int = 2,
                  progress: bool = True, log=print) -> dict[str, Any]:
    """Train every missing or corrupted member (in parallel, one process per member up to
    ``workers``; ``workers=1``: in this process). Returns {"built": [...], "rebuilt":
    {member: reason}, "members": {member: member.json}, "wall_seconds", "cpu_seconds"}."""
    import multiprocessing as mp

    folder = zoo_dir(spec, root)
    folder.mkdir(parents=True, exist_ok=True)
    todo, rebuilt = [], {}
    for k, name in enumerate(member_names(spec)):
        path = folder / name
        for stale in folder.glob(f"{name}.partial-*"):  # an interrupted build's leftovers
            shutil.rmtree(stale, ignore_errors=True)
        if path.exists():
            problem = verify_member(path)
            if problem is None:
                continue
            log(f"real zoo: {name} is corrupted ({problem}); rebuilding it")
            rebuilt[name] = problem
            shutil.rmtree(path)
            (folder / "report.json").unlink(missing_ok=True)
        todo.append((k, name))
    info: dict[str, Any] = {"built": [n for _, n in todo], "rebuilt": rebuilt, "members": {}}
    if not todo:
        return info
    (folder / "report.json").unlink(missing_ok=True)
    log(f"real zoo {spec.key()}: training {len(todo)} teacher(s) ({spec.steps} steps of batch "
        f"{spec.batch_size}, top {spec.train_layers} layers, {min(workers, len(todo))} process(es))")
    t0 = time.perf_counter()
    if workers <= 1:  # in this process, one member after the other
        for pos, (k, name) in enumerate(todo):
            partial = folder / f"{name}.partial-{os.getpid()}"
            info["members"][name] = _train_member(asdict(spec), k, str(partial), pos, progress)
            partial.rename(folder / name)
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(todo)),
                                 mp_context=mp.get_context("spawn")) as ex:
            futs = {}
            for pos, (k, name) in enumerate(todo):
                partial = folder / f"{name}.partial-{os.getpid()}"
                futs[name] = (ex.submit(_train_member, asdict(spec), k, str(partial), pos,
                                        progress), partial)
            for name, (fut, partial) in futs.items():
                info["members"][name] = fut.result()
                partial.rename(folder / name)
    info["wall_seconds"] = round(time.perf_counter() - t0, 1)
    info["cpu_seconds"] = round(sum(m["train_cpu_seconds"] for m in info["members"].values()), 1)
    return info


@dataclass
class RealZoo:
    spec: RealZooSpec
    folder: Path
    report: dict[str, Any]

    @property
    def names(self) -> list[str]:
        return list(NAMES[: len(self.spec.groups())])

    def member_paths(self) -> list[Path]:
        return [self.folder / n for n in member_names(self.spec)]

    def teachers(self, **kw: Any) -> list[Any]:
        from madopd.models.hf import HFTeacher

        return [HFTeacher(str(p), name=n, **kw) for p, n in zip(self.member_paths(), self.names)]

    def task(self, **kw: Any):
        from madopd.realworld.house import HouseCallsTask

        return HouseCallsTask(seed=self.spec.seed, n_train=self.spec.n_train,
                              n_eval=self.spec.n_eval, **kw)

    def debate_protocol(self, rounds: int = 1, **kw: Any):
        from madopd.debate import DebateProtocol
        from madopd.realworld.templates import HOUSE_TEMPLATES
        from madopd.types import Sampling

        return DebateProtocol(rounds=rounds, templates=HOUSE_TEMPLATES,
                              confidence_fallback=kw.pop("confidence_fallback", "none"),
                              sampling=Sampling(greedy=True, max_new_tokens=self.spec.eval_tokens),
                              **kw)


def load_real_zoo(spec: RealZooSpec | None = None, *, root: str | Path | None = None,
                  workers: int = 2, progress: bool = True, log=print) -> RealZoo:
    """The zoo of ``spec`` (default profile): built, verified, measured; cached."""
    from madopd.realworld.zoo_eval import measure_zoo

    spec = spec or PROFILES["default"]
    build = build_members(spec, root, workers=workers, progress=progress, log=log)
    folder = zoo_dir(spec, root)
    report_path = folder / "report.json"
    if report_path.exists():
        try:
            report = json.loads(report_path.read_text())
        except ValueError:
            log(f"real zoo: {report_path} is not valid JSON; measuring again")
            report = None
    else:
        report = None
    zoo = RealZoo(spec, folder, report or {})
    if report is None:
        report = measure_zoo(zoo, log=log)
        report["build"] = build
        report["members"] = {n: json.loads((p / "member.json").read_text())
                             for n, p in zip(member_names(spec), zoo.member_paths())}
        for m in report["members"].values():
            m.pop("spec", None)
        tmp = report_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=1))
        tmp.replace(report_path)
        zoo.report = report
    return zoo


def profile_spec(name: str, **overrides: Any) -> RealZooSpec:
    if name not in PROFILES:
        raise ConfigError(f"real zoo profile {name!r} is unknown; valid: {sorted(PROFILES)}")
    return replace(PROFILES[name], **overrides)
