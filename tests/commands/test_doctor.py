"""`madopd doctor`: a good toy config passes every check; each misconfiguration is named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from madopd.cli import main
from madopd.distill import DistillConfig
from madopd.doctor import Check, fitted_temperature, format_checks, run_doctor
from madopd.models.hf import HFTeacher
from madopd.models.tiny import TinySpec, build_tiny_model

SMALL = dict(hidden_size=64, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=128)
NO_EOS_TEMPLATE = (  # the assistant's turn is not closed by <|end|>: a student never learns to stop
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
    "{% if m['role'] != 'assistant' %}<|end|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def _config(tmp_path: Path, tiny_dirs, **extra) -> Path:
    rows = [{"id": f"p{i}", "conversations": [{"from": "user", "value": f"q{i}?"},
                                              {"from": "assistant", "value": f"a{i}"}]}
            for i in range(8)]
    data = tmp_path / "tools.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"task": f"jsonl-tools:{data}", "student": tiny_dirs["student"],
           "teachers": [tiny_dirs["teacher_a"], tiny_dirs["teacher_c"]], "method": "mad_opd",
           "rounds": 1, "batch_size": 2, "max_steps": 3, "sampling": {"max_new_tokens": 4},
           "debate_sampling": {"max_new_tokens": 6, "temperature": 1.0, "seed": 0},
           "confidence_fallback": "forced_tag", **extra}
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    return path


def _doctor(capsys, cfg: Path, tmp_path: Path) -> tuple[int, dict[str, dict]]:
    rc = main(["doctor", str(cfg), "--json", "--out", str(tmp_path / "run")])
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is (rc == 0)
    return rc, {c["name"]: c for c in out["checks"]}


def test_a_good_toy_config_passes_every_check(tmp_path, tiny_dirs, capsys):
    rc, checks = _doctor(capsys, _config(tmp_path, tiny_dirs), tmp_path)
    assert rc == 0
    assert [n for n, c in checks.items() if c["ok"] is not True] == ["sandbox", "vLLM endpoints"]
    assert checks["sandbox"]["ok"] is None and checks["vLLM endpoints"]["ok"] is None  # n/a
    assert "forced_tag" in checks["confidence sources"]["detail"]
    assert sum(c["seconds"] for c in checks.values()) < 60
    rc = main(["doctor", str(_config(tmp_path, tiny_dirs)), "--out", str(tmp_path / "run")])
    table = capsys.readouterr().out
    assert rc == 0 and not any(line.startswith("✗") for line in table.splitlines()) and sum(line.startswith("✓") for line in table.splitlines()) == 10


def test_mismatched_tokenizer(tmp_path, tiny_dirs, capsys):
    other = tmp_path / "other_vocab"
    build_tiny_model(other, TinySpec(**SMALL, merged_tokens=("foo", "bar"), seed=5))
    cfg = _config(tmp_path, tiny_dirs, teachers=[tiny_dirs["teacher_a"], str(other)])
    rc, checks = _doctor(capsys, cfg, tmp_path)
    assert rc == 1 and checks["tokenizer"]["ok"] is False
    assert "other_vocab" in checks["tokenizer"]["detail"] or "vocab" in checks["tokenizer"]["detail"]
    assert checks["tokenizer"]["fix"]


def test_template_without_eos(tmp_path, tiny_dirs, capsys):
    student = tmp_path / "student_no_eos"
    shutil.copytree(tiny_dirs["student"], student)
    (student / "chat_template.jinja").write_text(NO_EOS_TEMPLATE)
    rc, checks = _doctor(capsys, _config(tmp_path, tiny_dirs, student=str(student)), tmp_path)
    assert rc == 1 and checks["chat template / EOS"]["ok"] is False
    assert "student" in checks["chat template / EOS"]["detail"]
    assert [n for n, c in checks.items() if c["ok"] is False] == ["chat template / EOS"]


def test_window_too_small(tmp_path, tiny_dirs, capsys):
    student = tmp_path / "short_student"
    build_tiny_model(student, TinySpec(**SMALL, max_positions=8))  # prompts are 6-7 tokens, + 4 new
    rc, checks = _doctor(capsys, _config(tmp_path, tiny_dirs, student=str(student)), tmp_path)
    assert rc == 1 and checks["prompts fit the windows"]["ok"] is False
    assert "window of 8" in checks["prompts fit the windows"]["detail"]


class _HotTeacher(HFTeacher):
    """A teacher whose log-probs are its sampling distribution at T = 0.7 (slime #2085's bug)."""

    def score(self, contexts, continuation_ids, *, top_k=None):
        s = super().score(contexts, continuation_ids, top_k=None)
        s.dists = torch.log_softmax(s.dists / 0.7, dim=-1)
        return s


def test_teacher_scoring_at_temperature_0_7(tmp_path, tiny_dirs):
    cfg = DistillConfig.from_file(_config(tmp_path, tiny_dirs))
    teachers = [HFTeacher(tiny_dirs["teacher_a"]), _HotTeacher(tiny_dirs["teacher_c"])]
    checks = {c.name: c for c in run_doctor(cfg, teachers=teachers, out_dir=tmp_path)}
    t = checks["scoring temperature"]
    assert t.ok is False and "teacher_c scores at T=0.700" in t.detail
    assert "teacher_a" not in t.detail.split(" but ")[0]
    assert "✗ scoring temperature" in format_checks(list(checks.values()))


def test_fitted_temperature_recovers_t_and_ignores_masked_entries():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(7, 50, generator=g, dtype=torch.float64) * 3
    for T in (0.5, 0.7, 1.0, 2.0):
        lp = torch.log_softmax(z / T, dim=-1)
        lp[:, :5] = float("-inf")  # top-k style: entries without a value
        assert abs(fitted_temperature(z, lp) - T) < 1e-9


def test_format_marks_not_applicable_and_prints_fixes():
    text = format_checks([Check("a", True, "fine"), Check("b", False, "broken", "do x"),
                          Check("c", None, "n/a")])
    assert text.splitlines() == ["✓ a  fine", "✗ b  broken", "     fix: do x", "– c  n/a",
                                 "1 ✓, 1 ✗, 1 not applicable"]


def test_config_without_teachers_is_one_failed_load(tmp_path, tiny_dirs, capsys):
    rc, checks = _doctor(capsys, _config(tmp_path, tiny_dirs, teachers=[]), tmp_path)
    assert rc == 1 and list(checks) == ["models and task load"]


def test_a_code_task_checks_the_sandbox(tmp_path, tiny_dirs, capsys):
    data = tmp_path / "code.jsonl"
    data.write_text("".join(json.dumps({"id": f"c{i}", "prompt": f"def f{i}():"}) + "\n"
                            for i in range(6)))
    cfg = _config(tmp_path, tiny_dirs, task=f"jsonl-code:{data}", rounds=0, method="mt_opd",
                  weighting="uniform")
    rc, checks = _doctor(capsys, cfg, tmp_path)
    assert rc == 0 and checks["sandbox"]["ok"] is True  # CI installs bubblewrap (setup_sandbox)
    assert "isolation full" in checks["sandbox"]["detail"]


def test_a_served_teacher_that_does_not_answer(tmp_path, tiny_dirs, capsys):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = _config(tmp_path, tiny_dirs, teacher_backend="vllm_server", rounds=0, method="opd",
                  weighting="uniform", teachers=[tiny_dirs["teacher_a"]],
                  teacher_base_urls=[f"http://127.0.0.1:{port}"], teacher_timeout=2.0,
                  teacher_deadline=4.0, teacher_retries=0)
    rc, checks = _doctor(capsys, cfg, tmp_path)
    assert rc == 1 and checks["vLLM endpoints"]["ok"] is False
    assert "does not answer" in checks["vLLM endpoints"]["detail"]
    assert checks["tokenizer"]["ok"] is True  # the local tokenizer folder is still compared
