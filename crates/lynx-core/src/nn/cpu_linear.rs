//! A linear layer for burn's `flex` CPU backend: one GEMM straight into the output.
//!
//! burn's `linear` on flex is a matmul into a buffer that is zeroed and then copied once
//! more to align it (both on the calling thread), followed by a separate pass adding the
//! bias. Here the output is allocated once (zero pages the kernel hands out lazily), the
//! bias rows are written into it in parallel, and the GEMM accumulates onto them.

use burn::tensor::Shape;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::cpu::{MIN_CHUNK, Operand, elements, gemm_f32, zeros};
use crate::quant::QuantTensor;

/// f32 values of the weight decoded per tile (4 MiB): the tile is `TILE_VALUES / d_in`
/// output rows.
const TILE_VALUES: usize = 1 << 20;

/// Multiply-adds below which one thread is faster than two (as burn-flex decides).
const PARALLEL_MACS: usize = 192 * 192 * 192;

/// `x · weight + bias` over the last axis of `x`.
///
/// `x`: `[..., d_in]` contiguous f32; `weight`: `[d_in, d_out]` contiguous f32; `bias`:
/// `d_out` values. Output `[..., d_out]`.
pub(super) fn linear(x: &FlexTensor, weight: &FlexTensor, bias: Option<&[f32]>) -> FlexTensor {
    let [d_in, d_out] = weight.layout().shape().dims::<2>();
    let (mut out, rows) = output(x, d_in, d_out, bias);
    if rows == 0 || d_out == 0 {
        return out;
    }
    let dst = out.storage_mut::<f32>();
    let parallelism = parallelism(rows * d_in * d_out);
    let (src, w) = (elements(x), elements(weight));
    let lhs = Operand {
        ptr: src.as_ptr(),
        row: d_in as isize,
        col: 1,
    };
    let rhs = Operand {
        ptr: w.as_ptr(),
        row: d_out as isize,
        col: 1,
    };
    // SAFETY: `dst` is `rows × d_out` row-major, `src` `rows × d_in` row-major and `w`
    // `d_in × d_out` row-major, all contiguous and of exactly those lengths.
    unsafe {
        gemm_f32(
            [rows, d_out, d_in],
            dst.as_mut_ptr(),
            d_out,
            bias.is_some(),
            lhs,
            rhs,
            parallelism,
        );
    }
    out
}

fn parallelism(macs: usize) -> gemm::Parallelism {
    if macs >= PARALLEL_MACS {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    }
}

/// The `[..., d_out]` output of `x` `[..., d_in]`, its rows set to `bias` (or zero), and
/// the number of rows.
fn output(x: &FlexTensor, d_in: usize, d_out: usize, bias: Option<&[f32]>) -> (FlexTensor, usize) {
    let dims = x.layout().shape().to_vec();
    debug_assert_eq!(dims.last(), Some(&d_in), "linear: input width");
    let rows: usize = dims[..dims.len().saturating_sub(1)].iter().product();
    let mut shape = dims;
    if let Some(last) = shape.last_mut() {
        *last = d_out;
    }
    let mut out = zeros(Shape::from(shape));
    if rows == 0 || d_out == 0 {
        return (out, rows);
    }
    if let Some(bias) = bias {
        let dst = out.storage_mut::<f32>();
        let rows_per_task = (MIN_CHUNK / d_out).max(1);
        dst.par_chunks_mut(rows_per_task * d_out).for_each(|chunk| {
            for row in chunk.chunks_exact_mut(d_out) {
                row.copy_from_slice(bias);
            }
        });
    }
    (out, rows)
}

/// `x · Wᵀ + bias` with `W` `[d_out, d_in]` kept encoded: tiles of output rows of `W` are
/// decoded to f32 (at most [`TILE_VALUES`] values at a time) and multiplied straight into
/// their columns of the output, so the whole weight never exists in f32.
///
/// With `as_bf16` each decoded value is rounded to bf16 first (to nearest, ties to even,
/// as burn's cast): the weight a bf16 model holds, multiplied in f32 as a bf16 matrix
/// product accumulates.
///
/// `x`: `[..., d_in]` contiguous f32; `bias`: `d_out` values. Output `[..., d_out]`.
pub(super) fn linear_quantized(
    x: &FlexTensor,
    w: &QuantTensor,
    bias: Option<&[f32]>,
    as_bf16: bool,
) -> FlexTensor {
    let (d_out, d_in) = (w.shape()[0], w.shape()[1]);
    let (mut out, rows) = output(x, d_in, d_out, bias);
    if rows == 0 || d_out == 0 || d_in == 0 {
        return out;
    }
    let tile = (TILE_VALUES / d_in).clamp(1, d_out);
    let mut buf = vec![0f32; tile * d_in];
    let src = elements(x);
    let dst = out.storage_mut::<f32>();
    let mut start = 0;
    while start < d_out {
        let n = tile.min(d_out - start);
        let buf = &mut buf[..n * d_in];
        // Decoded in parallel, a few rows per task.
        let per_task = (MIN_CHUNK / d_in).max(1);
        buf.par_chunks_mut(per_task * d_in)
            .enumerate()
            .for_each(|(i, chunk)| {
                let first = start + i * per_task;
                w.dequantize_rows(first..first + chunk.len() / d_in, chunk);
                if as_bf16 {
                    chunk.iter_mut().for_each(|v| *v = round_bf16(*v));
                }
            });
        let lhs = Operand {
            ptr: src.as_ptr(),
            row: d_in as isize,
            col: 1,
        };
        // The tile is [n, d_in] row-major; the product reads it as [d_in, n].
        let rhs = Operand {
            ptr: buf.as_ptr(),
            row: 1,
            col: d_in as isize,
        };
        // SAFETY: `dst` is `rows × d_out` row-major and the tile's columns
        // `start..start + n` lie inside each row; `src` is `rows × d_in` and `buf`
        // `n × d_in`, both contiguous and of exactly those lengths.
        unsafe {
            gemm_f32(
                [rows, n, d_in],
                dst.as_mut_ptr().add(start),
                d_out,
                true,
                lhs,
                rhs,
                parallelism(rows * d_in * n),
            );
        }
        start += n;
    }
    out
}

/// `v` rounded to the nearest bf16 (ties to even), as an f32; NaN stays NaN.
pub(super) fn round_bf16(v: f32) -> f32 {
    if v.is_nan() {
        return v;
    }
    let bits = v.to_bits();
    let rounded = bits.wrapping_add(0x7FFF + ((bits >> 16) & 1));
    f32::from_bits(rounded & 0xFFFF_0000)
}
