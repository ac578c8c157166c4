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

/// Multiply-adds below which one thread is faster than two (as burn-flex decides).
const PARALLEL_MACS: usize = 192 * 192 * 192;

/// `x · weight + bias` over the last axis of `x`.
///
/// `x`: `[..., d_in]` contiguous f32; `weight`: `[d_in, d_out]` contiguous f32; `bias`:
/// `d_out` values. Output `[..., d_out]`.
pub(super) fn linear(x: &FlexTensor, weight: &FlexTensor, bias: Option<&[f32]>) -> FlexTensor {
    let dims = x.layout().shape().to_vec();
    let [d_in, d_out] = weight.layout().shape().dims::<2>();
    debug_assert_eq!(dims.last(), Some(&d_in), "linear: input width");
    let rows: usize = dims[..dims.len().saturating_sub(1)].iter().product();
    let mut shape = dims;
    if let Some(last) = shape.last_mut() {
        *last = d_out;
    }
    let mut out = zeros(Shape::from(shape));
    if rows == 0 || d_out == 0 {
        return out;
    }
    let dst = out.storage_mut::<f32>();
    if let Some(bias) = bias {
        let rows_per_task = (MIN_CHUNK / d_out).max(1);
        dst.par_chunks_mut(rows_per_task * d_out).for_each(|chunk| {
            for row in chunk.chunks_exact_mut(d_out) {
                row.copy_from_slice(bias);
            }
        });
    }
    let parallelism = if rows * d_in * d_out >= PARALLEL_MACS {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
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
