// wasi:tensor's CUDA kernels, compiled at run time by NVRTC for the GPU in
// hand (host/src/tensor/cuda/kernels.rs) and cached on disk by BLAKE3.
//
// Float kernels are instantiated for f32, f16 and bf16: elements are loaded
// as f32, computed in f32 (reductions accumulate in f32), and rounded once
// on store (round to nearest even), like the CPU backend. No CUDA headers are
// needed: f16/bf16 conversions are single PTX instructions.

typedef long long i64;
#define INFINITY __int_as_float(0x7f800000)
struct h16 { unsigned short x; };
struct b16 { unsigned short x; };

__device__ __forceinline__ float ld(const float* p, i64 i) { return p[i]; }
__device__ __forceinline__ float ld(const h16* p, i64 i) {
    float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(p[i].x)); return f;
}
__device__ __forceinline__ float ld(const b16* p, i64 i) {
    return __uint_as_float(((unsigned)p[i].x) << 16);
}
__device__ __forceinline__ void st(float* p, i64 i, float v) { p[i] = v; }
__device__ __forceinline__ void st(h16* p, i64 i, float v) {
    unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v)); p[i].x = h;
}
__device__ __forceinline__ void st(b16* p, i64 i, float v) {
    unsigned short h; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(v)); p[i].x = h;
}

#define MAX_RANK 8
// Shape and two stride sets of a strided walk (element units), by value.
struct Dims {
    int rank;
    i64 shape[MAX_RANK];
    i64 sa[MAX_RANK];
    i64 sb[MAX_RANK];
};

// Offsets into the two strided operands of linear output index i.
__device__ __forceinline__ void offsets(const Dims& d, i64 i, i64* oa, i64* ob) {
    i64 a = 0, b = 0;
    for (int k = d.rank - 1; k >= 0; --k) {
        i64 n = d.shape[k];
        i64 idx = i % n;
        i /= n;
        a += idx * d.sa[k];
        b += idx * d.sb[k];
    }
    *oa = a; *ob = b;
}

#define GRID_LOOP(i, n) \
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < (n); i += (i64)blockDim.x * gridDim.x)

// ---- elementwise -------------------------------------------------------

template <typename T>
__device__ void binary(T* out, const T* a, const T* b, i64 n, int op, Dims d) {
    GRID_LOOP(i, n) {
        i64 oa, ob;
        offsets(d, i, &oa, &ob);
        float x = ld(a, oa), y = ld(b, ob), r;
        switch (op) {
            case 0: r = x + y; break;
            case 1: r = x - y; break;
            case 2: r = x * y; break;
            case 3: r = x / y; break;
            default: r = x / (1.0f + expf(-x)) * y; break;  // swiglu: silu(x) * y
        }
        st(out, i, r);
    }
}

template <typename T>
__device__ void unary(T* out, const T* x, i64 n, int op, float factor) {
    GRID_LOOP(i, n) {
        float v = ld(x, i), r;
        switch (op) {
            case 0: r = v * factor; break;
            // Below -9 gelu is under 1e-18 (and -inf gives the limit, -0).
            case 1: r = v < -9.0f ? -0.0f : 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)); break;
            case 2: r = 0.5f * v * (1.0f + tanhf(0.7978846f * (v + 0.044715f * v * v * v))); break;
            case 3: r = v / (1.0f + expf(-v)); break;
            case 4: r = fmaxf(v, 0.0f); break;
            case 5: r = tanhf(v); break;
            default: r = expf(v); break;
        }
        st(out, i, r);
    }
}

template <typename S, typename D>
__device__ void cast(D* out, const S* x, i64 n) {
    GRID_LOOP(i, n) { st(out, i, ld(x, i)); }
}

// ---- block reductions (blockDim.x = 256) -------------------------------

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
    return v;
}
// Sum (or max) over the block; every thread gets the result.
__device__ float block_reduce(float v, bool is_max) {
    __shared__ float part[32];
    __shared__ float result;
    v = is_max ? warp_max(v) : warp_sum(v);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        int warps = (blockDim.x + 31) >> 5;
        float w = lane < warps ? part[lane] : (is_max ? -INFINITY : 0.0f);
        w = is_max ? warp_max(w) : warp_sum(w);
        if (lane == 0) result = w;
    }
    __syncthreads();
    return result;
}

// Softmax of one row per block over its first `valid` elements; the rest are 0.
// Reads `x` (type S) scaled by `scale` plus an optional additive mask value.
template <typename S, typename T>
__device__ void softmax_row(T* out, const S* x, i64 len, i64 valid, float scale,
                            const float* mask_row, i64 mask_step) {
    float m = -INFINITY;
    for (i64 j = threadIdx.x; j < valid; j += blockDim.x) {
        float v = ld(x, j) * scale + (mask_row ? mask_row[j * mask_step] : 0.0f);
        m = fmaxf(m, v);
    }
    m = block_reduce(m, true);
    float s = 0.0f;
    for (i64 j = threadIdx.x; j < valid; j += blockDim.x) {
        float v = ld(x, j) * scale + (mask_row ? mask_row[j * mask_step] : 0.0f);
        s += expf(v - m);
    }
    s = block_reduce(s, false);
    float inv = 1.0f / s;
    for (i64 j = threadIdx.x; j < len; j += blockDim.x) {
        float r = 0.0f;
        if (j < valid) {
            float v = ld(x, j) * scale + (mask_row ? mask_row[j * mask_step] : 0.0f);
            r = expf(v - m) * inv;
        }
        st(out, j, r);
    }
}

// Softmax over the last axis; causal_q > 0 masks row r past (r % q) + 1 + (len - q).
template <typename T>
__device__ void softmax(T* out, const T* x, i64 rows, i64 len, i64 causal_q) {
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        i64 valid = causal_q > 0 ? (r % causal_q) + 1 + (len - causal_q) : len;
        if (valid > len) valid = len;
        softmax_row(out + r * len, x + r * len, len, valid, 1.0f, (const float*)0, 0);
    }
}

// Attention probabilities: scores (f32) are [batch*hk, group*sq, sk]; row r of
// batch bb is query head kh*group + r / sq, query i = r % sq. The mask (f32,
// may be null) is indexed with strides ms over [b, hq, sq, sk].
template <typename T>
__device__ void attn_softmax(T* probs, const float* scores, i64 hk, i64 group, i64 sq, i64 sk,
                             float scale, const float* mask, i64 ms0, i64 ms1, i64 ms2, i64 ms3,
                             int causal, i64 rows) {
    for (i64 row = blockIdx.x; row < rows; row += gridDim.x) {
        i64 per = group * sq;
        i64 bb = row / per, r = row % per;
        i64 bi = bb / hk, kh = bb % hk;
        i64 h = kh * group + r / sq, i = r % sq;
        i64 valid = causal ? i + 1 + (sk - sq) : sk;
        if (valid > sk) valid = sk;
        if (valid < 0) valid = 0;
        const float* mrow = mask ? mask + bi * ms0 + h * ms1 + i * ms2 : (const float*)0;
        softmax_row(probs + row * sk, scores + row * sk, sk, valid, scale, mrow, ms3);
    }
}

// Layer norm (kind 0) or RMS norm (kind 1) of one row of length dim into out.
// Weight and bias (may be null) are f32 whatever x's dtype (the host converts).
template <typename T>
__device__ void norm_row(T* out, const T* row, const float* w, const float* b, i64 dim,
                         int kind, float eps) {
    float mean = 0.0f;
    if (kind == 0) {
        float s = 0.0f;
        for (i64 j = threadIdx.x; j < dim; j += blockDim.x) s += ld(row, j);
        mean = block_reduce(s, false) / (float)dim;
    }
    float q = 0.0f;
    for (i64 j = threadIdx.x; j < dim; j += blockDim.x) {
        float d = ld(row, j) - mean;
        q += d * d;
    }
    float inv = rsqrtf(block_reduce(q, false) / (float)dim + eps);
    for (i64 j = threadIdx.x; j < dim; j += blockDim.x) {
        float y = (ld(row, j) - mean) * inv;
        if (w) y *= w[j];
        if (b) y += b[j];
        st(out, j, y);
    }
}

// Layer norm (kind 0) or RMS norm (kind 1) of each row of length dim.
template <typename T>
__device__ void norm(T* out, const T* x, const float* w, const float* b, i64 rows, i64 dim,
                     int kind, float eps) {
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        norm_row(out + r * dim, x + r * dim, w, b, dim, kind, eps);
    }
}

// sum = x + y (stored as T, as `add` stores it), then out = RMS norm of each
// row of sum, read back as stored: what `add` then `norm` give, one launch.
template <typename T>
__device__ void add_norm(T* sum, T* out, const T* x, const T* y, const float* w, i64 rows,
                         i64 dim, float eps) {
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        for (i64 j = threadIdx.x; j < dim; j += blockDim.x)
            st(sum, r * dim + j, ld(x, r * dim + j) + ld(y, r * dim + j));
        __syncthreads();
        norm_row(out + r * dim, sum + r * dim, w, (const float*)0, dim, 1, eps);
    }
}

// Rotary embedding: rows of length dim, position offset + (row % seq);
// layout 0 pairs (2i, 2i+1), layout 1 pairs (i, i + dim/2). Angles in f64.
template <typename T>
__device__ void rope(T* out, const T* x, i64 rows, i64 seq, i64 dim, i64 offset, float theta,
                     int layout) {
    i64 half = dim / 2;
    GRID_LOOP(t, rows * half) {
        i64 r = t / half, i = t % half;
        double pos = (double)(offset + r % seq);
        double freq = pow((double)theta, -2.0 * (double)i / (double)dim);
        double sn, cs;
        sincos(pos * freq, &sn, &cs);
        float c = (float)cs, s = (float)sn;
        i64 a = layout == 0 ? 2 * i : i, b = layout == 0 ? 2 * i + 1 : i + half;
        float x0 = ld(x, r * dim + a), x1 = ld(x, r * dim + b);
        st(out, r * dim + a, x0 * c - x1 * s);
        st(out, r * dim + b, x0 * s + x1 * c);
    }
    // Odd dims: the last element passes through.
    if (dim % 2 == 1) {
        GRID_LOOP(r, rows) { st(out, r * dim + dim - 1, ld(x, r * dim + dim - 1)); }
    }
}

// ---- layout (any element size) ------------------------------------------

// dst[dst_off + walk(sb)] = src[src_off + walk(sa)] over d.shape.
template <typename E>
__device__ void copy(E* dst, const E* src, i64 n, Dims d, i64 src_off, i64 dst_off) {
    GRID_LOOP(i, n) {
        i64 os, od;
        offsets(d, i, &os, &od);
        dst[dst_off + od] = src[src_off + os];
    }
}

// Rows of `table` (dim elements each) picked by validated i64 ids.
template <typename E>
__device__ void gather(E* out, const E* table, const i64* ids, i64 n_ids, i64 dim) {
    GRID_LOOP(t, n_ids * dim) {
        i64 r = t / dim, j = t % dim;
        out[t] = table[ids[r] * dim + j];
    }
}

// ---- reductions along a middle axis of [outer, len, inner] ---------------
// Two ways, the host picks (cuda/launch.rs `spread`): one thread per (outer,
// inner) position walking the axis, coalesced across positions when inner >
// 1 and there are many; or, `_rows` kernels, one block per position, its
// threads striding the axis, then a block reduction, for contiguous or few
// rows (a sampler's argmax over a 49k vocabulary: one thread alone would walk
// it for ~2 ms). Values are loaded as f32 (ints exactly enough for
// comparisons of their own type: see argmax).

template <typename T>
__device__ void softmax_axis(T* out, const T* x, i64 outer, i64 len, i64 inner) {
    GRID_LOOP(t, outer * inner) {
        i64 base = (t / inner) * len * inner + t % inner;
        float m = -INFINITY, s = 0.0f;
        for (i64 j = 0; j < len; ++j) m = fmaxf(m, ld(x, base + j * inner));
        for (i64 j = 0; j < len; ++j) s += expf(ld(x, base + j * inner) - m);
        float inv = 1.0f / s;
        for (i64 j = 0; j < len; ++j) st(out, base + j * inner, expf(ld(x, base + j * inner) - m) * inv);
    }
}

template <typename T>
__device__ void softmax_axis_rows(T* out, const T* x, i64 outer, i64 len, i64 inner) {
    for (i64 t = blockIdx.x; t < outer * inner; t += gridDim.x) {
        i64 base = (t / inner) * len * inner + t % inner;
        float m = -INFINITY, s = 0.0f;
#pragma unroll 4
        for (i64 j = threadIdx.x; j < len; j += blockDim.x) m = fmaxf(m, ld(x, base + j * inner));
        m = block_reduce(m, true);
#pragma unroll 4
        for (i64 j = threadIdx.x; j < len; j += blockDim.x) s += expf(ld(x, base + j * inner) - m);
        float inv = 1.0f / block_reduce(s, false);
        for (i64 j = threadIdx.x; j < len; j += blockDim.x)
            st(out, base + j * inner, expf(ld(x, base + j * inner) - m) * inv);
    }
}

// Mean along the axis; mask (f32, may be null) is [outer, len], 0 = skip.
template <typename T>
__device__ void mean_axis(T* out, const T* x, const float* mask, i64 outer, i64 len, i64 inner) {
    GRID_LOOP(t, outer * inner) {
        i64 o = t / inner, base = o * len * inner + t % inner;
        float acc = 0.0f, count = 0.0f;
        for (i64 j = 0; j < len; ++j) {
            if (mask && mask[o * len + j] == 0.0f) continue;
            count += 1.0f;
            acc += ld(x, base + j * inner);
        }
        st(out, t, count > 0.0f ? acc / count : 0.0f);
    }
}

// x / max(||x||_2, eps) along the axis.
template <typename T>
__device__ void l2norm_axis(T* out, const T* x, i64 outer, i64 len, i64 inner, float eps) {
    GRID_LOOP(t, outer * inner) {
        i64 base = (t / inner) * len * inner + t % inner;
        float q = 0.0f;
        for (i64 j = 0; j < len; ++j) { float v = ld(x, base + j * inner); q += v * v; }
        float inv = 1.0f / fmaxf(sqrtf(q), eps);
        for (i64 j = 0; j < len; ++j) st(out, base + j * inner, ld(x, base + j * inner) * inv);
    }
}

template <typename T>
__device__ void l2norm_axis_rows(T* out, const T* x, i64 outer, i64 len, i64 inner, float eps) {
    for (i64 t = blockIdx.x; t < outer * inner; t += gridDim.x) {
        i64 base = (t / inner) * len * inner + t % inner;
        float q = 0.0f;
#pragma unroll 4
        for (i64 j = threadIdx.x; j < len; j += blockDim.x) { float v = ld(x, base + j * inner); q += v * v; }
        float inv = 1.0f / fmaxf(sqrtf(block_reduce(q, false)), eps);
        for (i64 j = threadIdx.x; j < len; j += blockDim.x)
            st(out, base + j * inner, ld(x, base + j * inner) * inv);
    }
}

// ---- element access for every dtype (comparisons, casts, integer math) ----

__device__ __forceinline__ float fl(const float* p, i64 i) { return p[i]; }
__device__ __forceinline__ float fl(const h16* p, i64 i) { return ld(p, i); }
__device__ __forceinline__ float fl(const b16* p, i64 i) { return ld(p, i); }
__device__ __forceinline__ int fl(const int* p, i64 i) { return p[i]; }
__device__ __forceinline__ i64 fl(const i64* p, i64 i) { return p[i]; }
__device__ __forceinline__ unsigned fl(const unsigned char* p, i64 i) { return p[i]; }

// The order argmax and top-k rank by (as the CPU's `total_order`): NaN
// above everything, so the first NaN wins and sorting stays consistent.
template <typename K> __device__ __forceinline__ bool above(K a, K b) {
    return (a != a) ? (b == b) : (b == b && a > b);
}
template <typename K> __device__ __forceinline__ bool same(K a, K b) {
    return (a != a) ? (b != b) : a == b;
}

// Index of the first maximum along the axis (as the CPU: strictly greater wins).
template <typename T>
__device__ void argmax_axis(i64* out, const T* x, i64 outer, i64 len, i64 inner) {
    GRID_LOOP(t, outer * inner) {
        i64 base = (t / inner) * len * inner + t % inner, best = 0;
        auto bv = fl(x, base);
        for (i64 j = 1; j < len; ++j) {
            auto v = fl(x, base + j * inner);
            if (above(v, bv)) { bv = v; best = j; }
        }
        out[t] = best;
    }
}

// (ov, oi) ranks before (mv, mi) for argmax: above it, or the same at a
// lower index; an index < 0 is no candidate.
template <typename K> __device__ __forceinline__ bool first_max(K ov, i64 oi, K mv, i64 mi) {
    return oi >= 0 && (mi < 0 || above(ov, mv) || (same(ov, mv) && oi < mi));
}

// argmax_axis with one block per position: each thread keeps the first
// maximum of its stride (four loads in flight), then warps and the block
// keep the first of those.
template <typename T>
__device__ void argmax_axis_rows(i64* out, const T* x, i64 outer, i64 len, i64 inner) {
    typedef decltype(fl(x, 0)) K;
    __shared__ K wv[32];
    __shared__ i64 wi[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    for (i64 t = blockIdx.x; t < outer * inner; t += gridDim.x) {
        i64 base = (t / inner) * len * inner + t % inner, bi = -1;
        K bv = fl(x, base);
        for (i64 j0 = threadIdx.x; j0 < len; j0 += 4 * (i64)blockDim.x) {
            K v[4];
#pragma unroll
            for (int u = 0; u < 4; ++u) {
                i64 j = j0 + u * (i64)blockDim.x;
                v[u] = j < len ? fl(x, base + j * inner) : bv;
            }
#pragma unroll
            for (int u = 0; u < 4; ++u) {
                i64 j = j0 + u * (i64)blockDim.x;
                if (j < len && (bi < 0 || above(v[u], bv))) { bv = v[u]; bi = j; }
            }
        }
        for (int o = 16; o > 0; o >>= 1) {
            K ov = __shfl_xor_sync(0xffffffff, bv, o);
            i64 oi = __shfl_xor_sync(0xffffffff, bi, o);
            if (first_max(ov, oi, bv, bi)) { bv = ov; bi = oi; }
        }
        __syncthreads();
        if (lane == 0) { wv[warp] = bv; wi[warp] = bi; }
        __syncthreads();
        if (warp == 0) {
            bv = wv[0];
            bi = lane < warps ? wi[lane] : -1;
            if (lane < warps) bv = wv[lane];
            for (int o = 16; o > 0; o >>= 1) {
                K ov = __shfl_xor_sync(0xffffffff, bv, o);
                i64 oi = __shfl_xor_sync(0xffffffff, bi, o);
                if (first_max(ov, oi, bv, bi)) { bv = ov; bi = oi; }
            }
            if (lane == 0) out[t] = bi < 0 ? 0 : bi;
        }
    }
}

// The k largest of each row (largest first, lower index first on ties), one
// block of 256 threads per row: k passes, each finding the best element that
// comes after the previous pick in that order.
template <typename T>
__device__ void top_k_rows(T* values, i64* indices, const T* x, i64 rows, i64 len, i64 k) {
    typedef decltype(fl(x, 0)) K;
    __shared__ K sv[256];
    __shared__ i64 si[256];
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* row = x + r * len;
        K pv = fl(row, 0);
        i64 pi = -1;
        for (i64 p = 0; p < k; ++p) {
            K bv = fl(row, 0);
            i64 bi = -1;
            for (i64 j = threadIdx.x; j < len; j += blockDim.x) {
                K v = fl(row, j);
                bool after = pi < 0 || above(pv, v) || (same(v, pv) && j > pi);
                bool better = bi < 0 || above(v, bv) || (same(v, bv) && j < bi);
                if (after && better) { bv = v; bi = j; }
            }
            sv[threadIdx.x] = bv;
            si[threadIdx.x] = bi;
            __syncthreads();
            for (int w = blockDim.x / 2; w > 0; w >>= 1) {
                if (threadIdx.x < w) {
                    K ov = sv[threadIdx.x + w], mv = sv[threadIdx.x];
                    i64 oi = si[threadIdx.x + w], mi = si[threadIdx.x];
                    if (oi >= 0 && (mi < 0 || above(ov, mv) || (same(ov, mv) && oi < mi))) {
                        sv[threadIdx.x] = ov;
                        si[threadIdx.x] = oi;
                    }
                }
                __syncthreads();
            }
            pv = sv[0];
            pi = si[0];
            if (threadIdx.x == 0) {
                values[r * k + p] = row[pi < 0 ? 0 : pi];
                indices[r * k + p] = pi < 0 ? 0 : pi;
            }
            __syncthreads();
        }
    }
}

// Casts with an integer side: int -> int keeps the low bits, int -> float
// rounds to nearest (through f32, as the CPU), float -> int truncates and
// saturates (NaN -> 0), like Rust's `as`.
__device__ __forceinline__ i64 sat(float v, i64 lo, i64 hi) {
    if (v != v) return 0;
    if (v <= (float)lo) return lo;
    if (v >= (float)hi) return hi;
    return (i64)v;
}
template <typename D> struct Lim;
template <> struct Lim<int> { static constexpr i64 lo = -2147483647LL - 1, hi = 2147483647LL; };
template <> struct Lim<i64> { static constexpr i64 lo = -9223372036854775807LL - 1, hi = 9223372036854775807LL; };
template <> struct Lim<unsigned char> { static constexpr i64 lo = 0, hi = 255; };

template <typename S, typename D>
__device__ void cast_int_int(D* out, const S* x, i64 n) {
    GRID_LOOP(i, n) { out[i] = (D)(unsigned long long)(i64)x[i]; }
}
template <typename S, typename D>
__device__ void cast_int_float(D* out, const S* x, i64 n) {
    GRID_LOOP(i, n) { st(out, i, (float)x[i]); }
}
template <typename S, typename D>
__device__ void cast_float_int(D* out, const S* x, i64 n) {
    GRID_LOOP(i, n) { out[i] = (D)sat(ld(x, i), Lim<D>::lo, Lim<D>::hi); }
}

// Wrapping integer arithmetic with broadcasting; division truncates (the host
// has checked the divisor for zeros; MIN / -1 wraps to MIN).
template <typename T, typename U>
__device__ void int_binary(T* out, const T* a, const T* b, i64 n, int op, Dims d) {
    GRID_LOOP(i, n) {
        i64 oa, ob;
        offsets(d, i, &oa, &ob);
        T x = a[oa], y = b[ob];
        T r;
        switch (op) {
            case 0: r = (T)((U)x + (U)y); break;
            case 1: r = (T)((U)x - (U)y); break;
            case 2: r = (T)((U)x * (U)y); break;
            default: r = ((T)-1 < (T)0 && y == (T)-1) ? (T)((U)0 - (U)x) : (T)(x / y); break;
        }
        out[i] = r;
    }
}

// ---- decode attention (wasi:tensor-fused) -------------------------------

// Rows of one launch at most; their positions travel by value.
#define DECODE_ROWS 256
struct Positions { int p[DECODE_ROWS]; };

// Element i of row x (width dim, even) rotated as `rope` rotates position pos.
template <typename T>
__device__ __forceinline__ float rotated(const T* x, i64 i, i64 dim, i64 pos, float theta,
                                         int layout) {
    i64 half = dim / 2;
    i64 j = layout == 0 ? i / 2 : i % half;
    i64 a = layout == 0 ? 2 * j : j, b = layout == 0 ? 2 * j + 1 : j + half;
    double freq = pow((double)theta, -2.0 * (double)j / (double)dim);
    double sn, cs;
    sincos((double)pos * freq, &sn, &cs);
    float c = (float)cs, s = (float)sn;
    float x0 = ld(x, a), x1 = ld(x, b);
    return i == a ? x0 * c - x1 * s : x0 * s + x1 * c;
}

// Four elements of p from i (i a multiple of 4, p's rows 16-byte aligned
// for f32 and 8-byte aligned for the 16-bit types).
__device__ __forceinline__ void ld4(const float* p, i64 i, float* v) {
    float4 f = *reinterpret_cast<const float4*>(p + i);
    v[0] = f.x; v[1] = f.y; v[2] = f.z; v[3] = f.w;
}
template <typename T>
__device__ __forceinline__ void ld4(const T* p, i64 i, float* v) {
    uint2 u = *reinterpret_cast<const uint2*>(p + i);
    T e[4];
    e[0].x = (unsigned short)(u.x & 0xffff); e[1].x = (unsigned short)(u.x >> 16);
    e[2].x = (unsigned short)(u.y & 0xffff); e[3].x = (unsigned short)(u.y >> 16);
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = ld(e, j);
}

// Copies of the caches [rows, hk, cap, d] with row r's rotated key and its
// value written at position pos.p[r]; row r's key heads start at k + r * kvs,
// its value heads at v + r * kvs (kvs = hk * d, or wider when packed).
template <typename T>
__device__ void decode_write(T* ko, T* vo, const T* ki, const T* vi, const T* k, const T* v,
                             i64 kvs, Positions pos, i64 rows, i64 hk, i64 cap, i64 d,
                             float theta, int layout) {
    GRID_LOOP(t, rows * hk * cap * d) {
        i64 i = t % d, rest = t / d;
        i64 p = rest % cap;
        rest /= cap;
        i64 h = rest % hk, r = rest / hk;
        if (p != pos.p[r]) {
            ko[t] = ki[t];
            vo[t] = vi[t];
        } else {
            i64 src = r * kvs + h * d;
            st(ko, t, rotated(k + src, i, d, p, theta, layout));
            vo[t] = v[src + i];
        }
    }
}

// decode_write for caches written where they are: only each row's rotated
// key and its value, at the row's position (a thread per new element).
// decode_write's parameters (one launch site); the old caches are not read.
template <typename T>
__device__ void decode_put(T* kc, T* vc, const T* k, const T* v, i64 kvs, Positions pos, i64 rows,
                           i64 hk, i64 cap, i64 d, float theta, int layout) {
    GRID_LOOP(t, rows * hk * d) {
        i64 i = t % d, rest = t / d;
        i64 h = rest % hk, r = rest / hk;
        i64 p = pos.p[r];
        i64 at = ((r * hk + h) * cap + p) * d + i, src = r * kvs + h * d;
        st(kc, at, rotated(k + src, i, d, p, theta, layout));
        vc[at] = v[src + i];
    }
}

// One block per (row, query head) (row r's query heads start at
// q + r * q_stride): the rotated query against the cache's positions
// 0..=pos.p[r] of its key head, softmax, weighted sum of values.
// Scores: a thread per position along its key row (the row's cache lines
// stay in L1 over the walk, the query is a shared-memory broadcast; a warp
// per position would leave each block a long serial chain at one row), into
// `scores`, an f32 workspace of [rows * hq, cap]. Weighted sum: each warp
// over its share of the positions, lanes across the width, then the warps'
// partial sums added. Shared memory: d + (blockDim.x / 32) * d floats.
template <typename T>
__device__ void decode_attend(T* out, const T* q, i64 q_stride, const T* kc, const T* vc,
                              float* scores, Positions pos, i64 rows, i64 hq, i64 hk, i64 cap,
                              i64 d, float theta, int layout, float scale) {
    extern __shared__ float shared[];
    float* qs = shared;
    float* part = shared + d;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    for (i64 row = blockIdx.x; row < rows * hq; row += gridDim.x) {
        i64 r = row / hq, h = row % hq, kh = h / (hq / hk);
        i64 p = pos.p[r];
        const T* qr = q + r * q_stride + h * d;
        __syncthreads();
        for (i64 i = threadIdx.x; i < d; i += blockDim.x) qs[i] = rotated(qr, i, d, p, theta, layout);
        __syncthreads();
        const T* keys = kc + (r * hk + kh) * cap * d;
        const T* values = vc + (r * hk + kh) * cap * d;
        float* sc = scores + row * cap;
        float m = -INFINITY;
        for (i64 j = threadIdx.x; j <= p; j += blockDim.x) {
            const T* kr = keys + j * d;
            float acc = 0.0f;
            if ((d & 3) == 0) {
                // Four elements a load (rows of d elements stay aligned).
#pragma unroll 4
                for (i64 i = 0; i < d; i += 4) {
                    float v[4];
                    ld4(kr, i, v);
                    acc += qs[i] * v[0] + qs[i + 1] * v[1] + qs[i + 2] * v[2] + qs[i + 3] * v[3];
                }
            } else {
#pragma unroll 8
                for (i64 i = 0; i < d; ++i) acc += qs[i] * ld(kr, i);
            }
            acc *= scale;
            sc[j] = acc;
            m = fmaxf(m, acc);
        }
        m = block_reduce(m, true);
        float sum = 0.0f;
        for (i64 j = threadIdx.x; j <= p; j += blockDim.x) {
            float e = expf(sc[j] - m);
            sc[j] = e;
            sum += e;
        }
        sum = block_reduce(sum, false);
        float inv = 1.0f / sum;
        // Two columns a lane (i, i + 32) in one walk over the positions.
        for (i64 i = lane; i < d; i += 64) {
            bool two = i + 32 < d;
            float a0 = 0.0f, a1 = 0.0f;
#pragma unroll 8
            for (i64 j = warp; j <= p; j += warps) {
                float s = sc[j];
                const T* vr = values + j * d;
                a0 += s * ld(vr, i);
                if (two) a1 += s * ld(vr, i + 32);
            }
            part[warp * d + i] = a0;
            if (two) part[warp * d + i + 32] = a1;
        }
        __syncthreads();
        for (i64 i = threadIdx.x; i < d; i += blockDim.x) {
            float acc = 0.0f;
            for (int w = 0; w < warps; ++w) acc += part[w * d + i];
            st(out, row * d + i, acc * inv);
        }
    }
}

// ---- skinny products ----------------------------------------------------

#define MATVEC_ROWS 8

// out[r, j] = sum_i x[r, i] * w[j, i] for m <= MATVEC_ROWS rows (x [m, k],
// w [n, k], row-major): the product of a decode step's few rows with a
// weight, where cuBLAS's cost per call on the CPU outweighs the work.
// MATVEC_SPLIT warps per output column j, each striding its share of w's
// row j (four elements per load when k is a multiple of 4) with a sum per
// row of x; warp reductions, then the column's warps added in shared
// memory. Splitting k keeps a narrow weight's few columns from leaving
// most of the GPU idle while each warp walks a long row alone.
#define MATVEC_SPLIT 4
template <typename T>
__device__ void matvec_t(T* out, const T* x, const T* w, i64 m, i64 n, i64 k) {
    __shared__ float part[32][MATVEC_ROWS];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int sub = warp % MATVEC_SPLIT, cols = (blockDim.x >> 5) / MATVEC_SPLIT;
    for (i64 j0 = blockIdx.x * (i64)cols; j0 < n; j0 += (i64)gridDim.x * cols) {
        i64 j = j0 + warp / MATVEC_SPLIT;
        float acc[MATVEC_ROWS];
#pragma unroll
        for (int r = 0; r < MATVEC_ROWS; ++r) acc[r] = 0.0f;
        if (j < n) {
            const T* wr = w + j * k;
            if ((k & 3) == 0) {
                for (i64 i = (sub * 32 + lane) * 4; i < k; i += MATVEC_SPLIT * 128) {
                    float wv[4];
                    ld4(wr, i, wv);
#pragma unroll
                    for (int r = 0; r < MATVEC_ROWS; ++r) {
                        if (r < m) {
                            float xv[4];
                            ld4(x + r * k, i, xv);
                            acc[r] += wv[0] * xv[0] + wv[1] * xv[1] + wv[2] * xv[2] + wv[3] * xv[3];
                        }
                    }
                }
            } else {
                for (i64 i = sub * 32 + lane; i < k; i += MATVEC_SPLIT * 32) {
                    float wv = ld(wr, i);
#pragma unroll
                    for (int r = 0; r < MATVEC_ROWS; ++r)
                        if (r < m) acc[r] += wv * ld(x, r * k + i);
                }
            }
        }
#pragma unroll
        for (int r = 0; r < MATVEC_ROWS; ++r)
            for (int o = 16; o > 0; o >>= 1) acc[r] += __shfl_xor_sync(0xffffffff, acc[r], o);
        __syncthreads();
        if (lane == 0) {
#pragma unroll
            for (int r = 0; r < MATVEC_ROWS; ++r) part[warp][r] = acc[r];
        }
        __syncthreads();
        if (sub == 0 && lane < m && j < n) {
            float sum = 0.0f;
            for (int q = 0; q < MATVEC_SPLIT; ++q) sum += part[warp + q][lane];
            st(out, lane * n + j, sum);
        }
    }
}

// out[r, j] = sum_i x[r, i] * w[j, i] for a few dozen rows (a decode step
// of up to 64 sequences) by a weight stored [n, k]: too many rows for
// matvec_t (it reads x once per column), too little work for cuBLAS's cost
// per call on the CPU. Tiled: a block computes MT_ROWS rows by MT_COLS
// columns, staging MT_K-wide slices of x and w in shared memory (the next
// slice's loads in flight while this one is used); each quarter of its 256
// threads keeps a 4 x 4 tile of sums for every output (rows ty + 16i,
// columns tx + 4j: no bank conflicts) over a quarter of each slice, and the
// quarters are added at the end, in order. Slices past k and rows past m
// are zeros; sums in f32.
//
// Split along k (grid z > 1): the few column tiles of a narrow weight (576
// columns: 36 blocks) would leave most of the GPU idle while each block
// walks all of k, so block z sums only k in [z * chunk, (z + 1) * chunk)
// and writes its tile of sums to `part_ws` (one MT_ROWS x MT_COLS tile per
// block); the tile's last block to finish (a ticket per tile, taken after
// a fence, given back as 0) adds the gridDim.z tiles in z order, whichever
// block that is, so the result does not depend on timing.
#define MT_ROWS 64
#define MT_COLS 16
#define MT_K 64
#define MT_PAD (MT_K + 4)
#define MT_BLOCK 256
template <typename T>
__device__ void matmul_t(T* out, const T* x, const T* w, i64 m, i64 n, i64 k, i64 chunk,
                         float* part_ws, unsigned* tickets) {
    __shared__ __align__(16) float xs[MT_ROWS][MT_PAD];
    __shared__ __align__(16) float ws[MT_COLS][MT_PAD];
    __shared__ float part[3][MT_ROWS][MT_COLS];
    int t = threadIdx.x, quarter = t >> 6, u = t & 63, tx = u & 3, ty = u >> 2;
    int kk = t % MT_K, lr = t / MT_K;  // this thread's loads: column kk, rows lr + 4q
    i64 r0 = (i64)blockIdx.y * MT_ROWS, j0 = (i64)blockIdx.x * MT_COLS;
    i64 kb = (i64)blockIdx.z * chunk, ke = kb + chunk < k ? kb + chunk : k;
    float xr[MT_ROWS / 4], wr[MT_COLS / 4];
    auto fetch = [&](i64 k0) {
        i64 gk = k0 + kk;
#pragma unroll
        for (int q = 0; q < MT_ROWS / 4; ++q) {
            i64 gr = r0 + lr + 4 * q;
            xr[q] = gr < m && gk < ke ? ld(x, gr * k + gk) : 0.0f;
        }
#pragma unroll
        for (int q = 0; q < MT_COLS / 4; ++q) {
            i64 gc = j0 + lr + 4 * q;
            wr[q] = gc < n && gk < ke ? ld(w, gc * k + gk) : 0.0f;
        }
    };
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
    fetch(kb);
    for (i64 k0 = kb; k0 < ke; k0 += MT_K) {
#pragma unroll
        for (int q = 0; q < MT_ROWS / 4; ++q) xs[lr + 4 * q][kk] = xr[q];
#pragma unroll
        for (int q = 0; q < MT_COLS / 4; ++q) ws[lr + 4 * q][kk] = wr[q];
        __syncthreads();
        if (k0 + MT_K < ke) fetch(k0 + MT_K);
#pragma unroll
        for (int c = quarter * (MT_K / 4); c < (quarter + 1) * (MT_K / 4); c += 4) {
            float4 a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                a[i] = *reinterpret_cast<const float4*>(&xs[ty + 16 * i][c]);
                b[i] = *reinterpret_cast<const float4*>(&ws[tx + 4 * i][c]);
            }
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j)
                    acc[i][j] += a[i].x * b[j].x + a[i].y * b[j].y + a[i].z * b[j].z + a[i].w * b[j].w;
        }
        __syncthreads();
    }
    if (quarter > 0) {
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) part[quarter - 1][ty + 16 * i][tx + 4 * j] = acc[i][j];
    }
    __syncthreads();
    if (gridDim.z == 1) {
        if (quarter == 0) {
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                i64 r = r0 + ty + 16 * i;
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    i64 c = j0 + tx + 4 * j;
                    int pr = ty + 16 * i, pc = tx + 4 * j;
                    float sum = acc[i][j] + part[0][pr][pc] + part[1][pr][pc] + part[2][pr][pc];
                    if (r < m && c < n) st(out, r * n + c, sum);
                }
            }
        }
        return;
    }
    __shared__ bool last;
    i64 tile = (i64)blockIdx.y * gridDim.x + blockIdx.x, tiles = (i64)gridDim.x * gridDim.y;
    if (quarter == 0) {
        float* mine = part_ws + ((i64)blockIdx.z * tiles + tile) * (MT_ROWS * MT_COLS);
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                int pr = ty + 16 * i, pc = tx + 4 * j;
                mine[pr * MT_COLS + pc] =
                    acc[i][j] + part[0][pr][pc] + part[1][pr][pc] + part[2][pr][pc];
            }
        __threadfence();
    }
    __syncthreads();
    if (t == 0) last = atomicAdd(&tickets[tile], 1u) == gridDim.z - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    // Every thread adds 4 of the tile's sums (coalesced), each part's 4
    // loads in flight together: a round trip per part, not per sum.
    float sum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (unsigned z = 0; z < gridDim.z; ++z) {
        const float* p = part_ws + (z * tiles + tile) * (MT_ROWS * MT_COLS);
        float v[4];
#pragma unroll
        for (int q = 0; q < 4; ++q) v[q] = __ldcg(p + t + q * MT_BLOCK);
#pragma unroll
        for (int q = 0; q < 4; ++q) sum[q] += v[q];
    }
#pragma unroll
    for (int q = 0; q < 4; ++q) {
        int at = t + q * MT_BLOCK;
        i64 r = r0 + at / MT_COLS, c = j0 + at % MT_COLS;
        if (r < m && c < n) st(out, r * n + c, sum[q]);
    }
    if (t == 0) tickets[tile] = 0;
}

// ---- instantiations ------------------------------------------------------

#define FLOAT_KERNELS(T, N)                                                                    \
    extern "C" __global__ void binary_##N(T* o, const T* a, const T* b, i64 n, int op, Dims d) { \
        binary(o, a, b, n, op, d);                                                             \
    }                                                                                          \
    extern "C" __global__ void unary_##N(T* o, const T* x, i64 n, int op, float f) {           \
        unary(o, x, n, op, f);                                                                 \
    }                                                                                          \
    extern "C" __global__ void softmax_##N(T* o, const T* x, i64 rows, i64 len, i64 q) {      \
        softmax(o, x, rows, len, q);                                                           \
    }                                                                                          \
    extern "C" __global__ void attn_softmax_##N(T* p, const float* s, i64 hk, i64 g, i64 sq,   \
                                                i64 sk, float scale, const float* m, i64 m0,   \
                                                i64 m1, i64 m2, i64 m3, int causal, i64 rows) { \
        attn_softmax(p, s, hk, g, sq, sk, scale, m, m0, m1, m2, m3, causal, rows);             \
    }                                                                                          \
    extern "C" __global__ void norm_##N(T* o, const T* x, const float* w, const float* b,      \
                                        i64 rows, i64 dim, int kind, float eps) {              \
        norm(o, x, w, b, rows, dim, kind, eps);                                                \
    }                                                                                          \
    extern "C" __global__ void rope_##N(T* o, const T* x, i64 rows, i64 seq, i64 dim,          \
                                        i64 off, float theta, int layout) {                    \
        rope(o, x, rows, seq, dim, off, theta, layout);                                        \
    }                                                                                          \
    extern "C" __global__ void softmax_axis_##N(T* o, const T* x, i64 outer, i64 len, i64 in) { \
        softmax_axis(o, x, outer, len, in);                                                    \
    }                                                                                          \
    extern "C" __global__ void mean_##N(T* o, const T* x, const float* m, i64 outer, i64 len,  \
                                        i64 in) {                                              \
        mean_axis(o, x, m, outer, len, in);                                                    \
    }                                                                                          \
    extern "C" __global__ void l2norm_##N(T* o, const T* x, i64 outer, i64 len, i64 in,        \
                                          float eps) {                                         \
        l2norm_axis(o, x, outer, len, in, eps);                                                \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(1024)                                         \
    softmax_axis_rows_##N(T* o, const T* x, i64 outer, i64 len, i64 in) {                      \
        softmax_axis_rows(o, x, outer, len, in);                                               \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(1024)                                         \
    l2norm_rows_##N(T* o, const T* x, i64 outer, i64 len, i64 in, float eps) {                 \
        l2norm_axis_rows(o, x, outer, len, in, eps);                                           \
    }                                                                                          \
    extern "C" __global__ void decode_write_##N(T* ko, T* vo, const T* ki, const T* vi,        \
                                                const T* k, const T* v, i64 kvs, Positions pos, \
                                                i64 rows, i64 hk, i64 cap, i64 d, float theta, \
                                                int layout) {                                  \
        decode_write(ko, vo, ki, vi, k, v, kvs, pos, rows, hk, cap, d, theta, layout);         \
    }                                                                                          \
    extern "C" __global__ void decode_put_##N(T* kc, T* vc, const T*, const T*, const T* k,      \
                                              const T* v, i64 kvs, Positions pos, i64 rows,     \
                                              i64 hk, i64 cap, i64 d, float theta, int layout) { \
        decode_put(kc, vc, k, v, kvs, pos, rows, hk, cap, d, theta, layout);                    \
    }                                                                                          \
    extern "C" __global__ void decode_attend_##N(T* o, const T* q, i64 qs, const T* kc,        \
                                                 const T* vc, float* sc, Positions pos,        \
                                                 i64 rows, i64 hq, i64 hk, i64 cap, i64 d,     \
                                                 float theta, int layout, float scale) {       \
        decode_attend(o, q, qs, kc, vc, sc, pos, rows, hq, hk, cap, d, theta, layout, scale);  \
    }                                                                                          \
    extern "C" __global__ void add_norm_##N(T* s, T* o, const T* x, const T* y, const float* w, \
                                            i64 rows, i64 dim, float eps) {                    \
        add_norm(s, o, x, y, w, rows, dim, eps);                                               \
    }                                                                                          \
    extern "C" __global__ void matvec_t_##N(T* o, const T* x, const T* w, i64 m, i64 n, i64 k) { \
        matvec_t(o, x, w, m, n, k);                                                            \
    }                                                                                          \
    extern "C" __global__ void matmul_t_##N(T* o, const T* x, const T* w, i64 m, i64 n, i64 k, \
                                            i64 chunk, float* ws, unsigned* tickets) {         \
        matmul_t(o, x, w, m, n, k, chunk, ws, tickets);                                        \
    }                                                                                          \
    extern "C" __global__ void to_f32_##N(float* o, const T* x, i64 n) { cast(o, x, n); }      \
    extern "C" __global__ void to_f16_##N(h16* o, const T* x, i64 n) { cast(o, x, n); }        \
    extern "C" __global__ void to_bf16_##N(b16* o, const T* x, i64 n) { cast(o, x, n); }

FLOAT_KERNELS(float, f32)
FLOAT_KERNELS(h16, f16)
FLOAT_KERNELS(b16, bf16)

#define LAYOUT_KERNELS(E, N)                                                                   \
    extern "C" __global__ void copy_##N(E* dst, const E* src, i64 n, Dims d, i64 so, i64 dof) { \
        copy(dst, src, n, d, so, dof);                                                         \
    }                                                                                          \
    extern "C" __global__ void gather_##N(E* o, const E* t, const i64* ids, i64 n, i64 dim) {  \
        gather(o, t, ids, n, dim);                                                             \
    }

LAYOUT_KERNELS(unsigned char, b1)
LAYOUT_KERNELS(unsigned short, b2)
LAYOUT_KERNELS(unsigned int, b4)
LAYOUT_KERNELS(unsigned long long, b8)

// Kernels for every dtype: argmax and top-k.
#define ANY_KERNELS(T, N)                                                                      \
    extern "C" __global__ void argmax_##N(i64* o, const T* x, i64 outer, i64 len, i64 in) {    \
        argmax_axis(o, x, outer, len, in);                                                     \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(1024)                                         \
    argmax_rows_##N(i64* o, const T* x, i64 outer, i64 len, i64 in) {                          \
        argmax_axis_rows(o, x, outer, len, in);                                                \
    }                                                                                          \
    extern "C" __global__ void top_k_##N(T* v, i64* idx, const T* x, i64 rows, i64 len, i64 k) { \
        top_k_rows(v, idx, x, rows, len, k);                                                   \
    }

ANY_KERNELS(float, f32)
ANY_KERNELS(h16, f16)
ANY_KERNELS(b16, bf16)
ANY_KERNELS(int, i32)
ANY_KERNELS(i64, i64)
ANY_KERNELS(unsigned char, u8)

// Integer arithmetic and casts with an integer side: cast_<to>_<from>.
#define INT_KERNELS(T, U, N)                                                                   \
    extern "C" __global__ void int_binary_##N(T* o, const T* a, const T* b, i64 n, int op,     \
                                              Dims d) {                                        \
        int_binary<T, U>(o, a, b, n, op, d);                                                   \
    }                                                                                          \
    extern "C" __global__ void cast_i32_##N(int* o, const T* x, i64 n) { cast_int_int(o, x, n); } \
    extern "C" __global__ void cast_i64_##N(i64* o, const T* x, i64 n) { cast_int_int(o, x, n); } \
    extern "C" __global__ void cast_u8_##N(unsigned char* o, const T* x, i64 n) {              \
        cast_int_int(o, x, n);                                                                 \
    }                                                                                          \
    extern "C" __global__ void cast_f32_##N(float* o, const T* x, i64 n) { cast_int_float(o, x, n); } \
    extern "C" __global__ void cast_f16_##N(h16* o, const T* x, i64 n) { cast_int_float(o, x, n); } \
    extern "C" __global__ void cast_bf16_##N(b16* o, const T* x, i64 n) { cast_int_float(o, x, n); }

INT_KERNELS(int, unsigned, i32)
INT_KERNELS(i64, unsigned long long, i64)
INT_KERNELS(unsigned char, unsigned char, u8)

#define FLOAT_TO_INT(T, N)                                                                     \
    extern "C" __global__ void cast_i32_##N(int* o, const T* x, i64 n) { cast_float_int(o, x, n); } \
    extern "C" __global__ void cast_i64_##N(i64* o, const T* x, i64 n) { cast_float_int(o, x, n); } \
    extern "C" __global__ void cast_u8_##N(unsigned char* o, const T* x, i64 n) {              \
        cast_float_int(o, x, n);                                                               \
    }

FLOAT_TO_INT(float, f32)
FLOAT_TO_INT(h16, f16)
FLOAT_TO_INT(b16, bf16)
