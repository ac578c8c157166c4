//! The head split and merge around attention, for burn's `flex` CPU backend.
//!
//! `[B, N, H·hd] → [B, H, N, hd]` and back are axis swaps whose inner runs (`hd` values)
//! stay contiguous. flex lays such views out with a scalar tiled transpose; here each run
//! is one slice copy, in parallel over the output's rows.

use burn::tensor::Shape;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::cpu::{elements, zeros};

/// `[B, X, Y, D]` (contiguous f32) → `[B, Y, X, D]`, laid out contiguously.
pub(super) fn swap_middle(x: &FlexTensor, [b, nx, ny, d]: [usize; 4]) -> FlexTensor {
    let mut out = zeros(Shape::from(vec![b, ny, nx, d]));
    let src = elements(x);
    if src.is_empty() {
        return out;
    }
    out.storage_mut::<f32>()
        .par_chunks_mut(nx * d)
        .enumerate()
        .for_each(|(row, dst)| {
            let (bi, y) = (row / ny, row % ny);
            for (xi, run) in dst.chunks_exact_mut(d).enumerate() {
                let from = ((bi * nx + xi) * ny + y) * d;
                run.copy_from_slice(&src[from..from + d]);
            }
        });
    out
}
