"""Load the student and teachers a DistillConfig names (transformers or vLLM backends).

Every path is checked first (``madopd.models.checks``): a missing folder, a truncated
``config.json`` or weights file is one error naming the field and the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from madopd.distill.config import DistillConfig
from madopd.errors import ConfigError
from madopd.models.checks import check_model_path, model_load_errors


def _device(cfg: DistillConfig) -> str:
    """'cpu' or this process's GPU: under ``accelerate launch`` / ``torchrun`` process r of a
    machine uses cuda:LOCAL_RANK (the device its Accelerator picks), not every one cuda:0."""
    from madopd.distill.distributed import env_local_rank

    dev = cfg.device
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() and not cfg.cpu else "cpu"
    if dev == "cuda" and cfg.cpu:
        dev = "cpu"
    if dev == "cuda":
        return f"cuda:{env_local_rank()}"
    return dev


def load_student(cfg: DistillConfig) -> Any:
    from madopd.models.hf import HFStudent, LoraSpec

    if not cfg.student:
        raise ConfigError("field 'student' must name a checkpoint")
    lora = None
    if cfg.lora_r:
        kw = {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout}
        if cfg.lora_targets:
            kw["target_modules"] = tuple(cfg.lora_targets)
        lora = LoraSpec(**kw)
    check_model_path(cfg.student, "student")
    with model_load_errors(cfg.student, "student"):
        return HFStudent(cfg.student, lora=lora, device=_device(cfg),
                         dtype=getattr(torch, cfg.dtype))


def teacher_tokenizer(cfg: DistillConfig, i: int, path: str) -> str:
    """The tokenizer of served teacher ``i``: ``teacher_tokenizers[i]``, else its own folder.
    Never the student's by default: that would make check_same_vocab compare the student with
    itself (issue 13, item 6)."""
    if cfg.teacher_tokenizers is not None:
        return cfg.teacher_tokenizers[i]
    if Path(path).is_dir():
        return path
    raise ConfigError(f"field 'teachers[{i}]': {path!r} is a served model name, not a local "
                      "folder, so its tokenizer is unknown; set teacher_tokenizers (one folder or "
                      "hub id per teacher; the student's only if they share a vocabulary)")


def teacher_names(cfg: DistillConfig) -> list[str]:
    paths = cfg.teachers[: cfg.effective_num_teachers]
    if cfg.teacher_names:
        return list(cfg.teacher_names[: len(paths)])
    names = [Path(p).name or p for p in paths]
    if len(set(names)) != len(names):
        names = [f"{n}#{i}" for i, n in enumerate(names)]
    return names


def load_teachers(cfg: DistillConfig) -> list[Any]:
    paths = cfg.teachers[: cfg.effective_num_teachers]
    if not paths:
        raise ConfigError("field 'teachers' must name at least one teacher")
    names = teacher_names(cfg)
    if cfg.teacher_backend == "hf":
        from madopd.models.hf import HFTeacher

        out = []
        for i, (p, n) in enumerate(zip(paths, names)):
            check_model_path(p, f"teachers[{i}]")
            with model_load_errors(p, f"teachers[{i}]"):
                out.append(HFTeacher(p, name=n, device=_device(cfg),
                                     dtype=getattr(torch, cfg.dtype)))
        return out
    if cfg.teacher_backend == "vllm_server":
        from madopd.models.vllm_server import VLLMServerTeacher

        urls = cfg.teacher_base_urls[: len(paths)]
        out = []
        for i, (u, p, n) in enumerate(zip(urls, paths, names)):
            tok = teacher_tokenizer(cfg, i, p)
            with model_load_errors(tok, f"teachers[{i}] (tokenizer)"):
                out.append(VLLMServerTeacher(
                    u, p, tokenizer=tok, name=n, timeout=cfg.teacher_timeout,
                    deadline=cfg.teacher_deadline, retries=cfg.teacher_retries,
                    retry_budget=cfg.teacher_retry_budget,
                    max_reply_bytes=int(cfg.teacher_max_reply_mib * 2**20)))
        return out
    from madopd.models.vllm_offline import VLLMOfflineTeacher

    return [VLLMOfflineTeacher(p, name=n) for p, n in zip(paths, names)]
