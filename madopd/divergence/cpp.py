"""Private: a hand-written C++ row kernel for dense divergences on CPU (issue 15).

Why it exists: inductor's C++ code for the fused chunk function (``fused.py``) runs
each row reduction as its own loop over the whole chunk -- max and Σexp for the student and
every teacher, then the value loop, then the gradient loop, which reads two [chunk, V]
buffers it stored -- and computes JSD's log ratio with exp + log1p. JSD stayed compute
bound at 19-49 % of copy bandwidth (docs/performance.md). This kernel works one row at a
time (a row of V logits stays in L2 between its passes) with, per row:

1. one pass per input for its log-normaliser (blocked online max / Σexp: the block max is
   taken from L1, so the running sum is rescaled at most once per block, not per element);
2. one pass over student and teachers together for the values and Σ_j c_j (∂D_j/∂z) up to
   the row-constant part, written straight into the gradient row;
3. (rkl, jsd) one pass over the gradient row that subtracts q · S, S = Σ_j c_j (row sum).

Transcendentals per logit (K = 1): fkl/rkl 4 exp (+1 exp for rkl's pass 3), jsd 4 exp +
1 log with log m = log(βp + (1-β)q) (``LOG_M_BETA``: only where min(β, 1-β) >= 0.2; near
the endpoints normalised JSD needs the exp + log1p form of ``jsd_log_ratios``, used then).
Same formulas and the same 0·log 0 = 0 selections as ``fused_dense``; the inputs are read in
their own dtype (float32, bfloat16, float16) and computed in float32; the gradient is
stored in the student's dtype.

Subnormals: on x86 the kernel's threads flush subnormal floats to zero (MXCSR FTZ + DAZ, set
on entry and restored on exit). Real LM logits put many log-probs below -87, where exp is
subnormal, and every operation on a subnormal costs ~100 cycles: measured 12.2 vs 2.3 ns per
logit (fkl) and 25.0 vs 2.9 (jsd) on logits N(0, 15²), single thread. The only visible
effect: a probability below 1.2e-38 counts as 0 (the float32 torch paths underflow to 0
below 1.4e-45), so forward KL is +inf only where the teacher's probability is >= 1.2e-38
on a token the student gives exactly 0 (contributions of such tokens are < 1e-36 otherwise).

Built with inductor's own C++ toolchain (``CppPythonBindingsCodeCache``: the same compiler,
flags, vector headers (at::vec + Sleef) and on-disk cache as compiled kernels), so it needs
exactly what ``torch.compile`` on CPU needs: a C++ compiler. Failures are the caller's to
count (``fused.compiled_kernel``).
"""

from __future__ import annotations

import torch

# min(β, 1-β) from which JSD's log mixture is log(βp + (1-β)q) (one log); below it the
# exp + log1p form keeps normalised JSD's precision as β → 0 or 1 (cancellation in b - log m
# is ~eps·|log q| absolute, i.e. eps·|log q| / β relative for njsd).
LOG_M_BETA = 0.2

_CTYPE = {torch.float32: "float", torch.bfloat16: "at::BFloat16", torch.float16: "at::Half"}

_PRELUDE = r"""
#include <torch/csrc/inductor/cpp_prefix.h>
#include <omp.h>
#include <cmath>
#include <limits>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
// flush subnormal results and operands to zero (MXCSR FTZ | DAZ) in this thread; returns
// the previous control word for restore_fp
static inline unsigned flush_subnormals() { unsigned c = _mm_getcsr(); _mm_setcsr(c | 0x8040u); return c; }
static inline void restore_fp(unsigned c) { _mm_setcsr(c); }
#else
static inline unsigned flush_subnormals() { return 0u; }
static inline void restore_fp(unsigned) {}
#endif
using Vec = at::vec::Vectorized<float>;
static constexpr int64_t W = Vec::size();
static constexpr float NEG_INF = -std::numeric_limits<float>::infinity();

// load n <= W values as float (lanes >= n are 0)
static inline Vec ld(const float* p, int64_t n) { return n == W ? Vec::loadu(p) : Vec::loadu(p, n); }
template <typename T> static inline Vec ld(const T* p, int64_t n) {
    return at::vec::convert<float>(at::vec::Vectorized<T>::loadu(p, n));
}
static inline void st(float* p, Vec v, int64_t n) { if (n == W) v.store(p); else v.store(p, n); }
template <typename T> static inline void st(T* p, Vec v, int64_t n) {
    at::vec::convert<T>(v).store(p, n);
}
static inline Vec keep(Vec v, int64_t n) { return n == W ? v : Vec::set(Vec(0.f), v, n); }
static inline Vec sel(Vec cond_gt0, Vec v) {  // v where cond > 0, else 0 (0·log 0 = 0)
    return Vec::blendv(Vec(0.f), v, cond_gt0 > Vec(0.f));
}
static inline float hsum(Vec v) {
    return at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return a + b; }, v);
}
static inline float hmax(Vec v) {
    return at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return at::vec::maximum(a, b); }, v);
}

// log Σ_v exp(x_v · s) of one row: NaN exactly for a row with a NaN, a +inf or only -inf
// entries. Also leaves e_v = exp(x_v · s - m_k) in e[V] and, per block k of B logits,
// f[k] = exp(m_k - lse), so that softmax(x · s)_v = e_v · f[v / B] needs no second exp.
static constexpr int64_t B = 1024;  // block: 4 KiB of fp32, its max and exps taken from L1
template <typename T> static float row_lse(const T* x, int64_t V, float s, float* e, float* f) {
    float m = NEG_INF; Vec acc(0.f); bool bad = false;
    for (int64_t b0 = 0, k = 0; b0 < V; b0 += B, ++k) {
        const int64_t b1 = std::min(V, b0 + B);
        Vec mv(NEG_INF);
        for (int64_t v = b0; v < b1; v += W) {
            const int64_t n = std::min(W, b1 - v);
            Vec y = ld(x + v, n) * Vec(s);
            mv = at::vec::maximum(mv, n == W ? y : Vec::set(Vec(NEG_INF), y, n));
        }
        const float bm = hmax(mv);
        if (std::isnan(bm) || bm == std::numeric_limits<float>::infinity()) { bad = true; break; }
        if (bm > m) { if (m > NEG_INF) acc = acc * Vec(std::exp(m - bm)); m = bm; }
        f[k] = m;
        const Vec mm(m);
        for (int64_t v = b0; v < b1; v += W) {  // m = -inf: every x here is -inf, e = 0
            const int64_t n = std::min(W, b1 - v);
            const Vec ev = m == NEG_INF ? Vec(0.f) : keep((ld(x + v, n) * Vec(s) - mm).exp(), n);
            acc = acc + ev;
            st(e + v, ev, n);
        }
    }
    if (bad || m == NEG_INF) return std::numeric_limits<float>::quiet_NaN();
    const float lse = m + std::log(hsum(acc));
    for (int64_t k = 0; k * B < V; ++k) f[k] = std::exp(f[k] - lse);  // f = 0 where m_k = -inf
    return lse;
}
"""

_KERNEL = r"""
extern "C" void kernel(const ZT* z, {teacher_args}, const float* coef, ZT* out,
                       float* vals, float* lse, float* scratch, int64_t n_rows, int64_t V,
                       int64_t n_threads, float s, float beta)
{{
    const TT* ts[J] = {{{teacher_list}}};
    // JSD constants: log β, log(1-β), the gradient factor (1-β or 1/β)
    const float lb = std::log(beta), l1b = std::log1p(-beta), gk = {gk};
    const int64_t nb = (V + B - 1) / B, per = (J + 1) * (V + nb);  // scratch floats per thread
    #pragma omp parallel num_threads(n_threads)
    {{
    const unsigned fp_mode = flush_subnormals();
    #pragma omp for schedule(static)
    for (int64_t r = 0; r < n_rows; ++r) {{
        // thread-private rows: e (exps) and f (block scales) of the student, then each teacher
        float* ez = scratch + omp_get_thread_num() * per;
        float* fz = ez + V;
        const ZT* zr = z + r * V;
        const float lz = row_lse(zr, V, s, ez, fz);
        float lt[J]; float* et[J]; float* ft[J]; Vec acc[J], acc2[J];
        for (int j = 0; j < J; ++j) {{
            et[j] = ez + (j + 1) * (V + nb); ft[j] = et[j] + V;
            lt[j] = row_lse(ts[j] + r * V, V, s, et[j], ft[j]);
            acc[j] = Vec(0.f); acc2[j] = Vec(0.f);
        }}
        lse[r * (J + 1)] = lz;
        for (int j = 0; j < J; ++j) lse[r * (J + 1) + 1 + j] = lt[j];
        ZT* o = out + r * V;
        (void)o; (void)coef; (void)lb; (void)l1b; (void)gk;
        for (int64_t v = 0; v < V; v += W) {{
            const int64_t n = std::min(W, V - v);
            const int64_t k = v / B;
            const Vec b = ld(zr + v, n) * Vec(s) - Vec(lz);
            const Vec q = ld(ez + v, n) * Vec(fz[k]);
            Vec g(0.f);
            for (int j = 0; j < J; ++j) {{
                const Vec a = ld(ts[j] + r * V + v, n) * Vec(s) - Vec(lt[j]);
                const Vec p = ld(et[j] + v, n) * Vec(ft[j][k]);
{body}
            }}
{store}
        }}
        float S = 0.f;
        for (int j = 0; j < J; ++j) {{
{finish}
        }}
{second}
    }}
    restore_fp(fp_mode);
    }}
}}
"""

# per kind: (body: per teacher j in the vector loop, accumulating acc[j] (and acc2[j]) and g;
#            store: after the teachers; finish: vals and S per teacher; second: pass 3)
_FKL = dict(
    body="""                acc[j] = acc[j] + keep(sel(p, p * (a - b)), n);
                GRAD(g = g + Vec(coef[r * J + j]) * (q - p);)""",
    store="""            GRAD(st(o + v, g * Vec(s), n);)""",
    finish="""            vals[r * J + j] = hsum(acc[j]);""",
    second="")
_RKL = dict(
    body="""                const Vec tq = keep(sel(q, q * (b - a)), n);
                acc[j] = acc[j] + tq;
                GRAD(g = g + Vec(coef[r * J + j]) * tq;)""",
    store="""            GRAD(st(o + v, g, n);)""",
    finish="""            vals[r * J + j] = hsum(acc[j]);
            GRAD(S += coef[r * J + j] * vals[r * J + j];)""",
    # where(q > 0, Σ_j c_j q (b - a_j) - q S, 0): q = 0 rows of an infinite S stay 0
    second="""        GRAD(for (int64_t v = 0; v < V; v += W) {
            const int64_t n = std::min(W, V - v);
            const Vec q = ld(ez + v, n) * Vec(fz[v / B]);
            st(o + v, sel(q, ld(o + v, n) - q * Vec(S)) * Vec(s), n);
        })""")
_JSD_LOGM = """                const Vec lm = at::vec::maximum(Vec(beta) * p + Vec(1.f - beta) * q,
                                                Vec(std::numeric_limits<float>::min())).log();
                const Vec lp = a - lm, lq = b - lm;"""
# the exp + log1p form (jsd_log_ratios): exact at p = 0 / q = 0, precise as β → 0 or 1
_JSD_LOG1P = """                const Vec d = a - b;
                Vec lp, lq;
                if (beta <= 0.5f) {
                    const Vec u = d + Vec(lb), c = Vec(l1b);
                    lq = (at::vec::maximum(u, c) + (-(u - c).abs()).exp().log1p()).neg();
                    lp = Vec::blendv(Vec(-lb), d + lq, q > Vec(0.f));
                } else {
                    const Vec u = Vec(l1b) - d, c = Vec(lb);
                    lp = (at::vec::maximum(u, c) + (-(u - c).abs()).exp().log1p()).neg();
                    lq = Vec::blendv(Vec(-l1b), lp - d, p > Vec(0.f));
                }"""
_JSD_TAIL = """
                const Vec tq = keep(sel(q, q * lq), n);
                acc[j] = acc[j] + keep(sel(p, p * lp), n);
                acc2[j] = acc2[j] + tq;
                GRAD(g = g + Vec(coef[r * J + j] * gk) * tq;)"""
_JSD = dict(
    store="""            GRAD(st(o + v, g, n);)""",
    finish="""            const float sp = hsum(acc[j]), sq = hsum(acc2[j]);
            vals[r * J + j] = {val};
            GRAD(S += coef[r * J + j] * gk * sq;)""",
    second="""        GRAD(for (int64_t v = 0; v < V; v += W) {
            const int64_t n = std::min(W, V - v);
            const Vec q = ld(ez + v, n) * Vec(fz[v / B]);
            st(o + v, (ld(o + v, n) - q * Vec(S)) * Vec(s), n);
        })""")


def source(kind: str, log_m: bool, n_teachers: int, with_grad: bool, z_dtype: torch.dtype,
           t_dtype: torch.dtype) -> str:
    """The C++ source of one kernel configuration; β and 1/τ are arguments at run time, so
    one build serves every β of a kind (``log_m``: JSD's log-mixture form, see LOG_M_BETA)."""
    J = n_teachers
    gk = "0.f"
    if kind == "fkl":
        parts = dict(_FKL)
    elif kind == "rkl":
        parts = dict(_RKL)
    else:
        gk = "1.f - beta" if kind == "jsd" else "1.f / beta"
        val = "beta * sp + (1.f - beta) * sq" if kind == "jsd" else "sp / (1.f - beta) + sq / beta"
        parts = dict(_JSD, body=(_JSD_LOGM if log_m else _JSD_LOG1P) + _JSD_TAIL)
        parts["finish"] = parts["finish"].format(val=val)
    body = _KERNEL.format(teacher_args=", ".join(f"const TT* t{j}" for j in range(J)),
                          teacher_list=", ".join(f"t{j}" for j in range(J)), gk=gk, **parts)
    grad = "#define GRAD(...) __VA_ARGS__\n" if with_grad else "#define GRAD(...)\n"
    head = (f"using ZT = {_CTYPE[z_dtype]};\nusing TT = {_CTYPE[t_dtype]};\n"
            f"static constexpr int J = {J};\n")
    return _PRELUDE + grad + head + body


def uses_log_m(kind: str, beta: float) -> bool:
    return kind in ("jsd", "njsd") and min(beta, 1 - beta) >= LOG_M_BETA


def argtypes(n_teachers: int, z_dtype, t_dtype) -> list[str]:
    zt, tt = _CTYPE[z_dtype], _CTYPE[t_dtype]
    return ([f"const {zt}*"] + [f"const {tt}*"] * n_teachers
            + ["const float*", f"{zt}*", "float*", "float*", "float*", "int64_t", "int64_t",
               "int64_t", "float", "float"])


def supported(cd: torch.dtype, z_dtype: torch.dtype, t_dtypes, device_type: str) -> bool:
    """CPU, float32 compute, student and teachers in one of float32 / bf16 / fp16 (teachers
    all of one dtype)."""
    return (device_type == "cpu" and cd == torch.float32 and z_dtype in _CTYPE
            and len(set(t_dtypes)) == 1 and next(iter(t_dtypes)) in _CTYPE)


def build(kind, beta, inv_tau, n_teachers, with_grad, z_dtype, t_dtype):
    """Compile (or load from inductor's cache) one configuration; returns
    ``fn(z [n, V], teachers: J × [n, V], coef [n, J] float32 or None, out [n, V] or None)``
    -> (values [n, J] float32, bad-row flags [n, 1 + J]), the signature of ``fused_dense``."""
    from torch._inductor.codecache import CppPythonBindingsCodeCache

    J = n_teachers
    src = source(kind, uses_log_m(kind, beta), J, with_grad, z_dtype, t_dtype)
    raw = CppPythonBindingsCodeCache.load_pybinding(argtypes(J, z_dtype, t_dtype), src)

    def fn(z, teachers, coef, out):
        n, V = z.shape
        z = z.contiguous()
        ts = [t.contiguous() for t in teachers]
        vals = torch.empty(n, J, dtype=torch.float32)
        lse = torch.empty(n, J + 1, dtype=torch.float32)
        if with_grad:
            if not out.is_contiguous():
                raise ValueError("the gradient rows must be contiguous")
            c = coef.to(torch.float32).contiguous()
        else:  # unused by the kernel (GRAD() compiles away), any valid pointer will do
            c, out = vals, z
        nt = torch.get_num_threads()
        nb = -(-V // 1024)
        scratch = torch.empty(nt * (J + 1) * (V + nb), dtype=torch.float32)
        raw(z, *ts, c, out, vals, lse, scratch, n, V, nt, float(inv_tau), float(beta))
        return vals, torch.isnan(lse)

    return fn
