"""Benchmark: madopd's chunked divergences against a naive full-materialisation baseline.

    python benchmarks/bench_divergence.py                     # 2,048 tokens x 32,000 vocab
    python benchmarks/bench_divergence.py --tokens 512 --vocab 151936 --kinds jsd --threads 2
    python benchmarks/bench_divergence.py --real              # SmolLM2 logits, V = 49,152
    python benchmarks/bench_divergence.py --cpu-kernel inductor   # torch.compile's kernel

``--real`` replaces the random logits (N(0, 2²)) by real ones: SmolLM2-135M-Instruct under 3
personas as the teachers and its ``shrink_layers`` family student, one no-grad forward over
8 short real conversations, made once per process (benchmarks/_real_logits.py); it prints
one line and exits 0 when the model is not pulled (``python -m madopd models pull
smollm2-135m-instruct``).

For each divergence kind and K teachers (K = 1, and K = 3 with target="sum", Eq. 8) it runs
forward + backward w.r.t. the student logits [N, V] (float32) with

* naive:   log_softmax over the whole [N, V] for student and teachers, ``F.kl_div`` terms
           (JSD via a logsumexp mixture, as the official code does), autograd backward;
* chunked: ``madopd.divergence`` (analytic per-chunk gradient, one [N, V] gradient buffer;
           the path column says which kernel ran: cpp = the C++ row kernel, inductor =
           torch.compile's, eager = op-by-op),

in the same process, alternating the two, and prints RATIOS chunked / naive.

Threads: default 2, with ``OMP_WAIT_POLICY=PASSIVE`` set before torch is imported
(unless already set). On the shared 2-core development box the cores are oversubscribed (load
average 7-10); OpenMP's default spin-waiting then burns the time slices the other thread needs,
and every one of the chunked path's thousands of small kernels stalls at its barrier: measured
FKL at 1,024 x 32,000, 2 threads: 4-14 s spinning vs 0.9 s passive (1 thread: 0.6 s). Passive
waiting applies to both implementations alike. ``--threads 1`` avoids the question entirely.

Bandwidth: the physical limit is reading every logit once, so we time ``clone()`` of the same
tensors (student + K teachers: each logit read once and written once) and print
``t_clone / t_chunked`` = the fraction of memory-copy bandwidth the divergence achieves
(1.0 would be copy speed).

Peak memory, honestly: torch CPU tensors live in ordinary process memory, so the kernel's
resident-set counters see them (tracemalloc does not). Before each measured run we free
everything, call glibc ``malloc_trim(0)`` (hands cached free heap pages back to the OS), read
VmRSS, reset the peak counter by writing "5" to /proc/self/clear_refs, run one forward +
backward, and report VmHWM - VmRSS_before: the extra resident memory the run needed at its
peak, inputs excluded (both implementations read the same inputs), the gradient included.
Allocator: ``malloc_trim`` leaves free heap pages non-resident, and glibc's heap then hands out
different addresses over time, so a run re-faults pages it does not need at once and RSS
overstates live memory (we saw 270 or 700 MiB for the same chunked run, by history). So the
memory run sets glibc's mmap threshold to 1 MiB (``mallopt``): every tensor >= 1 MiB is then
its own mapping, returned to the OS when freed, and RSS tracks live tensors exactly. That
costs page faults, so timing uses separate runs with the threshold at 32 MiB (chunk
temporaries reused from the heap, as in a long-running process); the time column is the
minimum of ``--repeats`` such runs. Linux only. Timings on a shared 2-core machine are
noisy: the load average is printed.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import math
import os
import re
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP pool

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from madopd import divergence as D  # noqa: E402


# ----------------------------------------------------------------------------- memory
def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{key}:\s+(\d+)", f.read()).group(1)) * 1024


def _mmap_threshold(nbytes: int) -> None:
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, nbytes)  # -3 = M_MMAP_THRESHOLD
    except OSError:
        pass


def _trim():
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def peak_extra_bytes(fn) -> int:
    """Extra resident bytes at the peak of fn() relative to just before it."""
    _trim()
    before = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    fn()
    return _status("VmHWM") - before


# ----------------------------------------------------------------------------- cases
def naive_loss(z, teachers, w, kind, beta, dtype=torch.float32):
    s = F.log_softmax(z.to(dtype), -1)  # [N, V] kept for backward
    total = 0.0
    for k, t in enumerate(teachers):
        tl = F.log_softmax(t.to(dtype), -1)
        if kind == "fkl":  # KL(p‖q): kl_div(input=log q, target=log p)
            d = F.kl_div(s, tl, log_target=True, reduction="none").sum(-1)
        elif kind == "rkl":
            d = F.kl_div(tl, s, log_target=True, reduction="none").sum(-1)
        else:
            m = torch.logsumexp(torch.stack([s + math.log(1 - beta), tl + math.log(beta)]), 0)
            d = (beta * F.kl_div(m, tl, log_target=True, reduction="none").sum(-1)
                 + (1 - beta) * F.kl_div(m, s, log_target=True, reduction="none").sum(-1))
            if kind == "njsd":
                d = d / (beta * (1 - beta))
        total = total + w[k] * d
    return total.mean()


def chunked_loss(z, teachers, w, kind, beta, chunk_size, stats=None):
    spec = D.DivergenceSpec(kind, beta)
    if len(teachers) == 1:
        return D.divergence(z, teachers[0], spec, chunk_size=chunk_size, stats=stats)
    return D.multi_teacher_divergence(z, teachers, w, spec, chunk_size=chunk_size, stats=stats)


def run_once(z0, teachers, w, kind, beta, impl, chunk_size):
    z = z0.detach().requires_grad_(True)
    if impl == "naive":
        loss = naive_loss(z, teachers, w, kind, beta)
    else:
        loss = chunked_loss(z, teachers, w, kind, beta, chunk_size)
    loss.backward()
    return float(loss.detach()), z.grad


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_case(args, kind, K, real=None):
    """One row of the table; ``real`` = (student logits, teacher logits list) or None for
    random logits (N(0, 2^2), seed 0)."""
    g = torch.Generator().manual_seed(0)
    N, V = args.tokens, args.vocab
    if real is None:
        z0 = torch.randn(N, V, generator=g) * 2
        teachers = [torch.randn(N, V, generator=g) * 2 for _ in range(K)]
    else:
        z0, teachers = real[0], real[1][:K]
    w = torch.softmax(torch.randn(K, generator=g), -1)
    beta = 0.5
    res = {"naive": {"t": []}, "chunked": {"t": []}}
    stats: dict = {}
    # the first chunked call compiles the fused kernel (if the policy does): timed apart
    t0 = time.perf_counter()
    z = z0.detach().requires_grad_(True)
    chunked_loss(z, teachers, w, kind, beta, args.chunk_size, stats).backward()
    first_t = time.perf_counter() - t0
    del z
    _mmap_threshold(1 << 20)  # memory runs: exact RSS accounting (see the docstring)
    for impl in ("naive", "chunked"):
        out = {}
        res[impl]["mem"] = peak_extra_bytes(lambda impl=impl, out=out: out.update(zip(
            ("loss", "grad"), run_once(z0, teachers, w, kind, beta, impl, args.chunk_size))))
        res[impl].update(out)
        _trim()
    grad_err = float((res["naive"].pop("grad") - res["chunked"].pop("grad")).abs().max())
    loss_err = abs(res["naive"]["loss"] - res["chunked"]["loss"])
    _mmap_threshold(32 << 20)  # timed runs: temporaries reused from the heap
    clone_ts = []
    for _ in range(args.repeats):  # interleaved: copy, naive, chunked see the same load
        clone_ts.append(timed(lambda: [x.clone() for x in [z0, *teachers]]))
        for impl in ("naive", "chunked"):
            t = timed(lambda impl=impl: run_once(z0, teachers, w, kind, beta, impl,
                                                 args.chunk_size))
            res[impl]["t"].append(t)
            _trim()
    ratios = [c / t for c, t in zip(clone_ts, res["chunked"]["t"])]  # per repeat, side by side
    for impl in res:
        res[impl]["t"] = statistics.median(res[impl]["t"])
    path = ("cpp" if stats.get("count/divergence_kernel_cpp") else "inductor") \
        if stats.get("count/divergence_kernel_compiled") else "eager"
    if real is not None:  # real logits are peaky: say which fp32 value is nearer float64
        with torch.no_grad():
            ref = float(naive_loss(z0, teachers, w.double(), kind, beta, torch.float64))
        res["ref64"] = {impl: abs(res[impl]["loss"] - ref) / abs(ref) for impl in
                        ("naive", "chunked")}
    return res, statistics.median(ratios), loss_err, grad_err, first_t, path


def _real_data(args, K):
    """(student, teachers) real logits (set args.tokens / args.vocab), or None with one line
    saying why when the teacher model is not pulled."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_real_logits", os.path.join(os.path.dirname(os.path.abspath(__file__)), "_real_logits.py"))
    real = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(real)
    if not real.cached():
        print(f"bench_divergence --real: skipped: {real.TEACHER} is not pulled (run `python -m "
              f"madopd models pull {real.TEACHER}`)")
        return None
    z, ts, note = real.load(args.tokens or 512, K)
    print(note)
    args.tokens, args.vocab = z.shape
    return z, ts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=None, help="rows (default 2,048; --real 512)")
    ap.add_argument("--vocab", type=int, default=32000, help="ignored with --real")
    ap.add_argument("--kinds", default="fkl,rkl,jsd,njsd")
    ap.add_argument("--teachers", default="1,3", help="comma-separated K values")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads (see docstring)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="interleaved timed runs per case (medians are kept)")
    ap.add_argument("--chunk-size", type=int, default=None, help="tokens per chunk (auto)")
    ap.add_argument("--kernel", default="auto", choices=("auto", "compiled", "eager"),
                    help="madopd.divergence.KernelPolicy.mode")
    ap.add_argument("--real", action="store_true",
                    help="real logits at V = 49,152: SmolLM2-135M-Instruct teachers (personas) "
                         "and its shrink_layers student (benchmarks/_real_logits.py); --tokens "
                         "caps the rows (default 512 here); skipped when the model is not pulled")
    ap.add_argument("--cpu-kernel", default="cpp", choices=("cpp", "inductor"),
                    help="madopd.divergence.KernelPolicy.cpu_kernel (the fused kernel on CPU)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    D.set_kernel_policy(mode=args.kernel, cpu_kernel=args.cpu_kernel)
    teacher_counts = [int(k) for k in args.teachers.split(",")]
    real = None
    if args.real:
        real = _real_data(args, max(teacher_counts))
        if real is None:
            return 0
    args.tokens = args.tokens or 2048
    print(f"N={args.tokens} tokens x V={args.vocab} vocab, float32, threads={args.threads}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, kernel={args.kernel}/"
          f"{args.cpu_kernel}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, "
          f"torch {torch.__version__}")
    print(f"one [N, V] fp32 tensor = {args.tokens * args.vocab * 4 / 2**20:.0f} MiB")
    head = (f"{'kind':5} {'K':>2} {'path':8} {'chunk':>5} | {'1st s':>6} | {'naive s':>8} "
            f"{'ours s':>8} {'t ratio':>7} | {'naive MiB':>9} {'ours MiB':>9} {'mem ratio':>9} "
            f"| {'copy BW':>7} | {'|dloss|':>8} {'|dgrad|':>8}")
    print(head)
    print("-" * len(head))
    worst_bw, worst_m, worst_err = math.inf, 0.0, 0.0
    for K in teacher_counts:
        for kind in args.kinds.split(","):
            chunk = args.chunk_size or D.auto_chunk_size(args.vocab, K, args.tokens)
            res, bw, loss_err, grad_err, first_t, path = bench_case(args, kind, K, real)
            n, c = res["naive"], res["chunked"]
            t_ratio, m_ratio = c["t"] / n["t"], c["mem"] / n["mem"]
            worst_bw, worst_m = min(worst_bw, bw), max(worst_m, m_ratio)
            worst_err = max(worst_err, grad_err / 1e-6, loss_err / max(1e-4 * abs(n["loss"]), 1e-6))
            print(f"{kind:5} {K:>2} {path:8} {chunk:>5} | {first_t:6.1f} | {n['t']:8.3f} "
                  f"{c['t']:8.3f} {t_ratio:7.2f} | {n['mem'] / 2**20:9.0f} "
                  f"{c['mem'] / 2**20:9.0f} {m_ratio:9.3f} | {bw:7.1%} | {loss_err:8.1e} "
                  f"{grad_err:8.1e}" + (f" | vs float64: naive {res['ref64']['naive']:.1e} "
                                         f"ours {res['ref64']['chunked']:.1e} (relative)"
                                         if "ref64" in res else ""), flush=True)
    print(f"worst copy-bandwidth fraction {worst_bw:.1%} (target >= 50%), worst memory ratio "
          f"{worst_m:.3f} (target <= 0.25); '1st s' = first call incl. compile; load average "
          f"now {os.getloadavg()[0]:.1f}")
    if worst_err > 1:  # ours must agree with the naive baseline (|dgrad| < 1e-6, loss 1e-4)
        print("ERROR: the divergence disagrees with the naive baseline")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
