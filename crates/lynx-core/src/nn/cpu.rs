//! Fused kernels for burn's `flex` CPU backend.
//!
//! On flex every tensor op is a separate pass over memory into a fresh buffer, so an
//! expression like `LN(x)·(1 + scale) + shift` costs five passes and five allocations.
//! These kernels do such expressions in one or two passes, in place when the input buffer
//! is not shared, over rows in parallel (rayon), with the element loops compiled for
//! AVX-512 and AVX2+FMA next to the baseline and picked at run time. They handle
//! contiguous f32 tensors; [`super::fused`] falls back to burn ops for anything else
//! (other dtypes, other backends, strided views).
//!
//! The one transcendental, `exp` in the GELU, is a polynomial of Cephes' `expf` (relative
//! error below 2·10⁻⁷) written with bit tricks only, so that it vectorises.

use burn::tensor::{DType, Device, Shape, Tensor, TensorData};
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

/// Rows handed to one rayon task at least (keeps tasks ≥ ~64 KiB of work).
pub(super) const MIN_CHUNK: usize = 1 << 14;

/// The flex tensor behind `t` if it is a contiguous f32 tensor on the flex device (its
/// elements are `storage()[start..end]`, see [`elements`]).
pub(super) fn flex_f32<const D: usize>(t: &Tensor<D>) -> Option<FlexTensor> {
    if t.dtype() != DType::F32 || t.device() != Device::flex() {
        return None;
    }
    let p = t.clone().try_into_primitive::<Flex>().ok()?;
    p.layout().contiguous_offsets().is_some().then_some(p)
}

/// The elements of a contiguous flex tensor, in order.
pub(super) fn elements(t: &FlexTensor) -> &[f32] {
    let (start, end) = t
        .layout()
        .contiguous_offsets()
        .expect("checked contiguous by flex_f32");
    &t.storage::<f32>()[start..end]
}

/// The `[B, 1, D]` (or `[B, D]`) modulation vectors of `t`, whatever its strides, as
/// `B·D` contiguous values: they are small, so gathering them costs nothing.
pub(super) fn gather_rows(t: &Tensor<3>) -> Option<Vec<f32>> {
    if t.dtype() != DType::F32 || t.device() != Device::flex() || t.dims()[1] != 1 {
        return None;
    }
    let p = t.clone().try_into_primitive::<Flex>().ok()?;
    let [b, _, d] = t.dims();
    let strides = p.layout().strides();
    let (sb, sd) = (strides[0], strides[2]);
    let off = p.layout().start_offset() as isize;
    let data = p.storage::<f32>();
    let mut out = Vec::with_capacity(b * d);
    for i in 0..b as isize {
        for j in 0..d as isize {
            out.push(data[(off + i * sb + j * sd) as usize]);
        }
    }
    Some(out)
}

/// A buffer that parallel tasks write in disjoint ranges of.
pub(super) struct SharedOut {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: tasks only write the disjoint ranges `SharedOut::slice` hands them.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// Wraps `buf` for the duration of a parallel section.
    pub(super) fn new(buf: &mut [f32]) -> Self {
        Self {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
        }
    }

    /// `buf[start..start + len]`.
    ///
    /// # Safety
    /// No two live slices may overlap, and the buffer must outlive them.
    #[allow(clippy::mut_from_ref)]
    pub(super) unsafe fn slice(&self, start: usize, len: usize) -> &mut [f32] {
        assert!(start + len <= self.len, "slice out of the buffer");
        // SAFETY: in bounds (asserted); disjointness is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

/// A zeroed contiguous f32 tensor of `shape`. (`FlexTensor::empty` zeroes a byte buffer
/// and then copies it to realign it, on the calling thread; a typed buffer needs
/// neither, and large ones come as lazily zeroed pages.)
pub(super) fn zeros(shape: Shape) -> FlexTensor {
    let n = shape.num_elements();
    FlexTensor::from_data(TensorData::new(vec![0.0f32; n], shape))
}

/// A strided f32 matrix operand of [`gemm_f32`]: element `(r, c)` at `ptr + r·row + c·col`.
#[derive(Clone, Copy)]
pub(super) struct Operand {
    pub(super) ptr: *const f32,
    pub(super) row: isize,
    pub(super) col: isize,
}

/// `dst = lhs · rhs` (or `dst += lhs · rhs` with `accumulate`) for `lhs` `[m, k]` and `rhs`
/// `[k, n]`, into the row-major `dst` `[m, n]` whose rows are `dst_row` apart.
///
/// # Safety
/// Every element the shapes and strides address must lie inside its buffer, and `dst`
/// must not overlap the operands.
pub(super) unsafe fn gemm_f32(
    [m, n, k]: [usize; 3],
    dst: *mut f32,
    dst_row: usize,
    accumulate: bool,
    lhs: Operand,
    rhs: Operand,
    parallelism: gemm::Parallelism,
) {
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_row as isize,
            accumulate,
            lhs.ptr,
            lhs.col,
            lhs.row,
            rhs.ptr,
            rhs.col,
            rhs.row,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `t` back as a tensor of rank `D`.
pub(super) fn wrap<const D: usize>(t: FlexTensor) -> Tensor<D> {
    Tensor::from_primitive::<Flex>(t)
}

/// `x` as an output buffer, written in place when nobody else holds it and it starts at
/// its storage's beginning; otherwise a fresh copy.
fn output_of(mut x: FlexTensor) -> FlexTensor {
    let own = x.layout().start_offset() == 0
        && x.layout().num_elements() == x.bytes().len() / 4
        && x.try_storage_mut::<f32>().is_some();
    if own {
        return x;
    }
    let mut out = zeros(x.layout().shape().clone());
    out.storage_mut::<f32>().copy_from_slice(elements(&x));
    out
}

/// Which instruction set the element loops run with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Isa {
    Avx512,
    Avx2,
    Base,
}

fn isa() -> Isa {
    use std::sync::OnceLock;
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512vl")
                && std::is_x86_feature_detected!("fma")
            {
                return Isa::Avx512;
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Base
    })
}

/// Defines `$name(args)` that runs `$body(args)` compiled for the detected ISA.
macro_rules! multiversion {
    ($name:ident => $body:ident($($arg:ident: $ty:ty),*)) => {
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) {
                    $body($($arg),*)
                }
                match isa() {
                    // SAFETY: the CPU has the features (checked by `isa`).
                    Isa::Avx512 => return unsafe { v4($($arg),*) },
                    Isa::Avx2 => return unsafe { v3($($arg),*) },
                    Isa::Base => {}
                }
            }
            $body($($arg),*)
        }
    };
}

// ---------------------------------------------------------------------------------------
// exp and GELU
// ---------------------------------------------------------------------------------------

/// `e^x` for `x` in about `[−87, 88]` (clamped), relative error below 2·10⁻⁷.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // 1.5·2²³: adding it rounds to an integer held in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * C1 - n * C2;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let k = t.to_bits().wrapping_sub(MAGIC.to_bits()) as i32;
    y * f32::from_bits(((k + 127) << 23) as u32)
}

/// GELU with the tanh approximation, as `x · σ(2·√(2/π)·(x + 0.044715·x³))` (the same
/// function as `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`).
#[inline(always)]
fn gelu_tanh_f32(x: f32) -> f32 {
    const A: f32 = (std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::SQRT_2) as f32; // 2·√(2/π)
    const B: f32 = 0.071_354_816; // 2·√(2/π)·0.044715
    let z = x * (A + B * x * x);
    x / (1.0 + exp_f32(-z))
}

#[inline(always)]
fn gelu_body(src: &[f32], dst: &mut [f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = gelu_tanh_f32(s);
    }
}

#[inline(always)]
fn gelu_inplace_body(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = gelu_tanh_f32(*v);
    }
}

multiversion!(gelu_chunk => gelu_body(src: &[f32], dst: &mut [f32]));
multiversion!(gelu_chunk_inplace => gelu_inplace_body(x: &mut [f32]));

/// The tanh GELU of a contiguous f32 flex tensor (in place when it is not shared).
pub(super) fn gelu_tanh(x: FlexTensor) -> FlexTensor {
    let mut x = x;
    let unique = x.layout().start_offset() == 0
        && x.layout().num_elements() == x.bytes().len() / 4
        && x.try_storage_mut::<f32>().is_some();
    if unique {
        x.storage_mut::<f32>()
            .par_chunks_mut(MIN_CHUNK)
            .for_each(gelu_chunk_inplace);
        return x;
    }
    let mut out = zeros(x.layout().shape().clone());
    out.storage_mut::<f32>()
        .par_chunks_mut(MIN_CHUNK)
        .zip(elements(&x).par_chunks(MIN_CHUNK))
        .for_each(|(d, s)| gelu_chunk(s, d));
    out
}

// ---------------------------------------------------------------------------------------
// Norms with modulation
// ---------------------------------------------------------------------------------------

/// `Σ f(v)` over `row` in 16 interleaved partial sums (which vectorise, and round less
/// than one running sum).
#[inline(always)]
fn sum_by(row: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; 16];
    let chunks = row.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    let mut total = rest.iter().map(|&v| f(v)).sum::<f32>();
    for a in acc {
        total += a;
    }
    total
}

/// Mean and `1/√(var + eps)` of a row (two passes).
#[inline(always)]
fn row_stats(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = sum_by(row, |v| v) / n;
    let var = sum_by(row, |v| (v - mean) * (v - mean)) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

#[inline(always)]
fn ln_mod_row(src: &[f32], dst: &mut [f32], scale: &[f32], shift: &[f32], eps: f32) {
    let (mean, rstd) = row_stats(src, eps);
    for (((d, &s), &sc), &sh) in dst.iter_mut().zip(src).zip(scale).zip(shift) {
        *d = (s - mean) * rstd * (1.0 + sc) + sh;
    }
}

#[inline(always)]
fn ln_mod_rows(src: &[f32], dst: &mut [f32], scale: &[f32], shift: &[f32], eps: f32) {
    let dim = scale.len();
    for (s, d) in src.chunks_exact(dim).zip(dst.chunks_exact_mut(dim)) {
        ln_mod_row(s, d, scale, shift, eps);
    }
}

multiversion!(ln_mod_chunk => ln_mod_rows(src: &[f32], dst: &mut [f32], scale: &[f32], shift: &[f32], eps: f32));

/// `LN(x)·(1 + scale) + shift` per row, LayerNorm without affine parameters; `x`
/// `[B, N, D]` contiguous f32, `scale` and `shift` `B·D` values. A new buffer (the input
/// is read again later by the residual).
pub(super) fn layer_norm_modulate(x: &FlexTensor, sc: &[f32], sh: &[f32], eps: f64) -> FlexTensor {
    let [b, n, d] = x.layout().shape().dims::<3>();
    let mut out = zeros(x.layout().shape().clone());
    let src = elements(x);
    let rows_per_task = (MIN_CHUNK / d).max(1);
    let eps = eps as f32;
    out.storage_mut::<f32>()
        .par_chunks_mut(rows_per_task * d)
        .enumerate()
        .for_each(|(i, dst)| {
            let first = i * rows_per_task;
            let rows = dst.len() / d;
            // Rows of one task may span two samples: split at the sample boundary.
            let mut r = 0;
            while r < rows {
                let row = first + r;
                let batch = row / n;
                let take = (n - row % n).min(rows - r);
                let (lo, hi) = (r * d, (r + take) * d);
                let mods = batch * d..(batch + 1) * d;
                ln_mod_chunk(
                    &src[row * d..(row + take) * d],
                    &mut dst[lo..hi],
                    &sc[mods.clone()],
                    &sh[mods],
                    eps,
                );
                r += take;
            }
        });
    debug_assert!(b * n * d == src.len());
    out
}

#[inline(always)]
fn rms_rows(x: &mut [f32], weight: &[f32], eps: f32) {
    let dim = weight.len();
    for row in x.chunks_exact_mut(dim) {
        let ss = sum_by(row, |v| v * v);
        let r = 1.0 / (ss / dim as f32 + eps).sqrt();
        for (v, &w) in row.iter_mut().zip(weight) {
            *v = *v * r * w;
        }
    }
}

multiversion!(rms_chunk => rms_rows(x: &mut [f32], weight: &[f32], eps: f32));

/// RMS norm over the last axis with a learned weight `w`, in place when possible.
pub(super) fn rms_norm(x: FlexTensor, w: &[f32], eps: f64) -> FlexTensor {
    let d = w.len();
    let mut out = output_of(x);
    let rows_per_task = (MIN_CHUNK / d).max(1);
    out.storage_mut::<f32>()
        .par_chunks_mut(rows_per_task * d)
        .for_each(|rows| rms_chunk(rows, w, eps as f32));
    out
}

#[inline(always)]
fn gate_rows(x: &mut [f32], y: &[f32], gate: &[f32]) {
    let dim = gate.len();
    for (xr, yr) in x.chunks_exact_mut(dim).zip(y.chunks_exact(dim)) {
        for ((a, &b), &g) in xr.iter_mut().zip(yr).zip(gate) {
            *a += b * g;
        }
    }
}

multiversion!(gate_chunk => gate_rows(x: &mut [f32], y: &[f32], gate: &[f32]));

/// `x + y · gate` with `x`, `y` `[B, N, D]` contiguous and `gate` `B·D` values, in place
/// in `x` when possible.
pub(super) fn gated_residual(x: FlexTensor, y: &FlexTensor, gs: &[f32]) -> FlexTensor {
    let [_, n, d] = x.layout().shape().dims::<3>();
    let mut out = output_of(x);
    let ys = elements(y);
    // Tasks within one sample, so each sees one gate row.
    let rows_per_task = (MIN_CHUNK / d).max(1).min(n);
    out.storage_mut::<f32>()
        .par_chunks_mut(n * d)
        .enumerate()
        .flat_map(|(b, sample)| {
            sample
                .par_chunks_mut(rows_per_task * d)
                .enumerate()
                .map(move |(t, rows)| (b, t, rows))
        })
        .for_each(|(b, t, rows)| {
            let start = b * n * d + t * rows_per_task * d;
            gate_chunk(
                rows,
                &ys[start..start + rows.len()],
                &gs[b * d..(b + 1) * d],
            );
        });
    out
}

#[inline(always)]
fn rope_rows(x: &mut [f32], cos: &[f32], sin: &[f32], pairs: usize) {
    // `x`: one token's `heads · pairs · 2` values; `cos`/`sin`: that token's `pairs`.
    for head in x.chunks_exact_mut(2 * pairs) {
        for ((p, &c), &s) in head.chunks_exact_mut(2).zip(cos).zip(sin) {
            let (a, b) = (p[0], p[1]);
            p[0] = a * c - b * s;
            p[1] = a * s + b * c;
        }
    }
}

multiversion!(rope_token => rope_rows(x: &mut [f32], cos: &[f32], sin: &[f32], pairs: usize));

/// Rotates the channel pairs of every head of every token of `x` `[B, N, heads·2P]` by
/// the token's angles (`cos`, `sin`: `N·P` values), in place when possible.
pub(super) fn rope_rotate(x: FlexTensor, cos: &[f32], sin: &[f32]) -> FlexTensor {
    let [_, n, d] = x.layout().shape().dims::<3>();
    let pairs = cos.len() / n;
    let mut out = output_of(x);
    let tokens_per_task = (MIN_CHUNK / d).max(1);
    out.storage_mut::<f32>()
        .par_chunks_mut(tokens_per_task * d)
        .enumerate()
        .for_each(|(i, rows)| {
            for (r, token) in rows.chunks_exact_mut(d).enumerate() {
                let t = (i * tokens_per_task + r) % n;
                let angles = t * pairs..(t + 1) * pairs;
                rope_token(token, &cos[angles.clone()], &sin[angles], pairs);
            }
        });
    out
}

// ---------------------------------------------------------------------------------------
// Channel norm (the VAE's), with SiLU
// ---------------------------------------------------------------------------------------

/// Positions of one channel-norm task (a few planes' worth of cache per channel).
pub(super) const CHANNEL_TILE: usize = 2048;

#[inline(always)]
fn square_acc(ss: &mut [f32], xs: &[f32]) {
    for (a, &v) in ss.iter_mut().zip(xs) {
        *a += v * v;
    }
}

#[inline(always)]
fn channel_row(xs: &[f32], ys: &mut [f32], inv: &[f32], g: f32, b: f32, silu: bool) {
    for ((o, &v), &r) in ys.iter_mut().zip(xs).zip(inv) {
        let n = v * r * g + b;
        *o = if silu { n / (1.0 + exp_f32(-n)) } else { n };
    }
}

multiversion!(square_acc_v => square_acc(ss: &mut [f32], xs: &[f32]));
multiversion!(channel_row_v => channel_row(xs: &[f32], ys: &mut [f32], inv: &[f32], g: f32, b: f32, silu: bool));

/// `x / max(‖x‖₂ over channels, 1e-12) · gain (+ bias)`, then SiLU when `silu`, for `x`
/// `[B, C, …]` contiguous f32; `gain` is `scale · gamma` per channel.
pub(super) fn channel_norm(
    x: &FlexTensor,
    gain: &[f32],
    bias: Option<&[f32]>,
    silu: bool,
) -> FlexTensor {
    let shape = x.layout().shape().clone();
    let (b, c) = (shape[0], shape[1]);
    let plane = shape.num_elements() / (b * c).max(1);
    let mut out = zeros(shape);
    let src = elements(x);
    let tiles = plane.div_ceil(CHANNEL_TILE);
    // Tasks own disjoint position ranges of every channel plane (the ranges interleave
    // across planes, so each task writes through the shared buffer).
    let dst = SharedOut::new(out.storage_mut::<f32>());
    (0..b * tiles).into_par_iter().for_each(|task| {
        let (s, t) = (task / tiles, task % tiles);
        let span = t * CHANNEL_TILE..((t + 1) * CHANNEL_TILE).min(plane);
        let mut ss = [0.0f32; CHANNEL_TILE];
        let ss = &mut ss[..span.len()];
        let row = |ch: usize| (s * c + ch) * plane + span.start;
        for ch in 0..c {
            square_acc_v(ss, &src[row(ch)..row(ch) + span.len()]);
        }
        for a in ss.iter_mut() {
            *a = 1.0 / a.sqrt().max(1e-12);
        }
        for (ch, &g) in gain.iter().enumerate() {
            // SAFETY: this task alone writes `span` of sample `s`'s planes.
            let ys = unsafe { dst.slice(row(ch), span.len()) };
            let b = bias.map_or(0.0, |b| b[ch]);
            channel_row_v(&src[row(ch)..row(ch) + span.len()], ys, ss, g, b, silu);
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate() {
        let mut worst = 0.0f64;
        let mut x = -80.0f32;
        while x < 80.0 {
            let want = (x as f64).exp();
            let got = exp_f32(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst:e}");
    }

    #[test]
    fn gelu_matches_the_tanh_formula() {
        for i in -2000..2000 {
            let x = i as f32 * 0.005;
            let xd = x as f64;
            let c = (2.0 / std::f64::consts::PI).sqrt();
            let want = 0.5 * xd * (1.0 + (c * (xd + 0.044715 * xd * xd * xd)).tanh());
            let got = gelu_tanh_f32(x) as f64;
            // Relative to the output, or to 1e-2 where the output is tiny (x ≪ 0, where
            // PyTorch's own `1 + tanh` form loses far more to cancellation).
            assert!(
                (got - want).abs() <= 2e-6 * want.abs().max(1e-2),
                "x = {x}: {got} vs {want}"
            );
        }
    }
}
