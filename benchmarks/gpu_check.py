"""A prepared GPU check for sessions lent a device (issue 14, item 5): at most a few minutes.

    bash benchmarks/gpu_check.sh            # on the device: real shapes, JSON under $OUT
    python benchmarks/gpu_check.py --dry-run   # anywhere: tiny shapes on CPU (tests the script)

Parts, each guarded (a failure is recorded in the JSON and the next part still runs; the JSON
is rewritten after every part, so a killed run leaves its partial results):
1. env: torch/transformers/accelerate versions, device name, HBM size.
2. divergences at N x V (8,192 x 151,936 bf16 on the device) for reverse KL, forward KL and
   JSD(0.5): madopd's chunked implementation vs plain torch (full fp32 log-softmax): forward +
   backward time, peak memory, max abs difference, and the fraction of HBM bandwidth (bytes
   of the two bf16 logit tensors read once and the gradient written once / time / peak BW).
3. one bf16 Distiller step (MT-OPD, 2 teachers) with random Qwen3-0.6B-shaped student and
   teachers on CUDA: step time per phase and peak memory.
Uses only torch, transformers, accelerate, peft and madopd (no vLLM, no hub).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

HBM_GBPS = {"H100": 3350.0, "H200": 4800.0}  # SXM peak bandwidth, GB/s


def _write(out: Path, results: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2, default=str))


def _guard(results: dict, name: str, out: Path, fn) -> None:
    t0 = time.perf_counter()
    try:
        results[name] = {"ok": True, **fn()}
    except Exception as exc:  # recorded, never hidden: the JSON names the failure
        results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                         "traceback": traceback.format_exc()[-3000:]}
    results[name]["wall_s"] = round(time.perf_counter() - t0, 3)
    _write(out, results)
    print(f"[gpu_check] {name}: {'ok' if results[name]['ok'] else results[name]['error']}",
          flush=True)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _peak_reset(dev):
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak(dev) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None


def env_part(dev: torch.device) -> dict:
    import accelerate
    import transformers

    info = {"torch": torch.__version__, "transformers": transformers.__version__,
            "accelerate": accelerate.__version__, "device": str(dev)}
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        info.update(name=p.name, hbm_gib=round(p.total_memory / 2**30, 1))
    return info


def _plain(kind: str, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Plain torch reference: full fp32 log-softmax, per-token divergence summed. -> scalar."""
    q, p = torch.log_softmax(s.float(), -1), torch.log_softmax(t.float(), -1)
    if kind == "rkl":
        return (q.exp() * (q - p)).sum()
    if kind == "fkl":
        return (p.exp() * (p - q)).sum()
    m = torch.logsumexp(torch.stack([p, q]), 0) - torch.log(torch.tensor(2.0))
    return 0.5 * ((p.exp() * (p - m)).sum() + (q.exp() * (q - m)).sum())


def divergence_part(dev: torch.device, N: int, V: int, repeats: int) -> dict:
    from madopd.divergence import forward_kl, jsd, reverse_kl

    fns = {"rkl": lambda s, t: reverse_kl(s, t, reduction="sum", chunk_size=1024),
           "fkl": lambda s, t: forward_kl(s, t, reduction="sum", chunk_size=1024),
           "jsd": lambda s, t: jsd(s, t, 0.5, reduction="sum", chunk_size=1024)}
    g = torch.Generator(device="cpu").manual_seed(0)
    s0 = (torch.randn(1, N, V, generator=g) * 2).to(dev, torch.bfloat16)
    t0 = (torch.randn(1, N, V, generator=g) * 2).to(dev, torch.bfloat16)
    name = torch.cuda.get_device_properties(dev).name if dev.type == "cuda" else ""
    bw = next((v for k, v in HBM_GBPS.items() if k in name), None)
    out: dict = {"N": N, "V": V, "dtype": "bfloat16"}
    for kind, fn in fns.items():
        row: dict = {}
        for impl, f in (("madopd", lambda s, t, fn=fn: fn(s, t)),
                        ("torch", lambda s, t, kind=kind: _plain(kind, s, t))):
            try:
                times, val, grad = [], None, None
                _peak_reset(dev)
                for _ in range(repeats):
                    s = s0.clone().requires_grad_(True)
                    _sync(dev)
                    a = time.perf_counter()
                    val = f(s, t0)
                    val.backward()
                    _sync(dev)
                    times.append(time.perf_counter() - a)
                    grad = s.grad
                best = min(times)
                row[impl] = {"s": best, "peak_gib": _peak(dev), "value": float(val.detach())}
                if bw:
                    moved = 3 * N * V * 2  # two bf16 inputs read, one bf16 gradient written
                    row[impl]["hbm_fraction"] = moved / best / (bw * 1e9)
                row[impl]["_grad"] = grad
            except Exception as exc:  # e.g. out of memory for the plain reference
                row[impl] = {"error": f"{type(exc).__name__}: {exc}"}
        if "_grad" in row.get("madopd", {}) and "_grad" in row.get("torch", {}):
            row["max_abs_grad_diff"] = float((row["madopd"]["_grad"].float()
                                              - row["torch"]["_grad"].float()).abs().max())
            row["rel_value_diff"] = abs(row["madopd"]["value"] - row["torch"]["value"]) / max(
                1e-12, abs(row["torch"]["value"]))
        for impl in ("madopd", "torch"):
            row.get(impl, {}).pop("_grad", None)
        out[kind] = row
        torch.cuda.empty_cache() if dev.type == "cuda" else None
    return out


def _qwen3_dir(root: Path, name: str, dims: dict, seed: int) -> str:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from madopd.models.tiny import build_tokenizer

    torch.manual_seed(seed)
    cfg = Qwen3Config(**dims, tie_word_embeddings=True)
    model = Qwen3ForCausalLM(cfg).to(torch.bfloat16)
    tok = build_tokenizer()
    tok.pad_token, tok.eos_token = "<|pad|>", "<|end|>"
    model.config.pad_token_id = tok.pad_token_id
    model.config.eos_token_id = tok.eos_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    path = root / name
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def step_part(dev: torch.device, dims: dict, batch: int, tokens: int, steps: int) -> dict:
    from madopd.distill import Distiller, preset
    from madopd.tasks.simple import SimpleTask

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = [_qwen3_dir(root, n, dims, i) for i, n in enumerate(("student", "ta", "tb"))]
        train = [(f"What is {a} plus {b}?", str(a + b)) for a in range(8) for b in range(8)]
        task = SimpleTask(train, train[:4], name="gpu-add")
        cfg = preset("mt_opd", student=paths[0], teachers=paths[1:], batch_size=batch,
                     dtype="bfloat16", device=dev.type, sampling={"max_new_tokens": tokens},
                     lr=1e-5, record_topk=0, verify_train=False, seed=0)
        _peak_reset(dev)
        d = Distiller.from_config(cfg, task)
        recs = [d.step().metrics for _ in range(steps)]
        last = recs[-1]
        return {"dims": dims, "batch": batch, "max_new_tokens": tokens, "steps": steps,
                "time": {k: v for k, v in last.items() if k.startswith("time/")},
                "loss": [m.get("loss") for m in recs] if "loss" in recs[0] else None,
                "grad_norm": [m.get("grad_norm") for m in recs], "peak_gib": _peak(dev)}


QWEN3_06B = dict(vocab_size=151936, hidden_size=1024, intermediate_size=3072,
                 num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                 head_dim=128, max_position_embeddings=4096)
TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, head_dim=32,
            max_position_embeddings=512)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU")
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"))
    args = ap.parse_args()
    out = Path(args.out)
    dev = torch.device("cpu" if args.dry_run or not torch.cuda.is_available() else "cuda")
    results: dict = {"dry_run": args.dry_run, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                       time.gmtime())}
    _write(out, results)
    _guard(results, "env", out, lambda: env_part(dev))
    N, V = (64, 512) if args.dry_run else (8192, 151936)
    _guard(results, "divergences", out, lambda: divergence_part(dev, N, V, 1 if args.dry_run else 3))
    dims = TINY if args.dry_run else QWEN3_06B
    _guard(results, "distiller_step", out,
           lambda: step_part(dev, dims, batch=2 if args.dry_run else 8,
                             tokens=4 if args.dry_run else 128, steps=2))
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _write(out, results)
    return 0 if all(v.get("ok") for v in results.values() if isinstance(v, dict)) else 1


if __name__ == "__main__":
    sys.exit(main())
