//! A direct 3D convolution for burn's `flex` CPU backend (stride 1, no groups, no
//! dilation: every convolution the Wan VAE decoder runs).
//!
//! flex computes `conv3d` by converting the input to channels-last, building im2col
//! tiles and scattering each GEMM result back, all per call. Here the input is padded
//! once and each kernel tap `(kt, kh, kw)` is one GEMM, `out += W[:, :, tap] · X_tap`,
//! where `X_tap` is the padded input read in place as a `[C_in, positions]` matrix shifted
//! by the tap's offset: the padding makes that shift affine, at the price of computing
//! `kw − 1` throw-away columns per row. Output positions are cut into tiles of whole
//! rows small enough that the accumulating tile stays in the core's L2 cache across the
//! taps, and tiles run in parallel; the valid columns are copied out with the bias.

use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::cpu::{Operand, SharedOut, elements, gemm_f32, zeros};

/// Bytes of output tile kept hot across the taps (the L2 of one core, roughly).
const TILE_BYTES: usize = 1 << 20;

/// `conv3d(x, weight, bias)` with stride 1 and symmetric spatial padding `[ph, pw]` (time
/// is not padded: the caller provides the causal past).
///
/// `x`: `[B, C_in, T, H, W]` contiguous f32; `weight`: `[C_out, C_in, kt, kh, kw]`
/// contiguous; output `[B, C_out, T − kt + 1, H + 2ph − kh + 1, W + 2pw − kw + 1]`.
pub(super) fn conv3d(
    x: &FlexTensor,
    weight: &[f32],
    wshape: [usize; 5],
    bias: Option<&[f32]>,
    pad: [usize; 2],
) -> FlexTensor {
    let [b, cin, t, h, w] = x.layout().shape().dims::<5>();
    let [cout, _, kt, kh, kw] = wshape;
    let (hp, wp) = (h + 2 * pad[0], w + 2 * pad[1]);
    let (to, ho, wo) = (t + 1 - kt, hp + 1 - kh, wp + 1 - kw);
    let taps = kt * kh * kw;
    let src = elements(x);
    let mut out = zeros([b, cout, to, ho, wo].into());
    let plane_p = t * hp * wp;
    // The padded input, one sample at a time; `kw` spare elements at the end keep the
    // throw-away columns of the last row inside the buffer.
    let mut xp = vec![0.0f32; cin * plane_p + kw];
    let rows_per_tile = (TILE_BYTES / 4 / (cout * wp)).clamp(1, ho);
    let row_tiles = ho.div_ceil(rows_per_tile);
    let out_len = cout * to * ho * wo;
    let out_all = out.storage_mut::<f32>();
    // The weight tap-major, `[taps, C_out, C_in]`: each tap's matrix is then contiguous
    // along `C_in`, which gemm packs as whole runs instead of gathering every taps-th
    // element (a cost paid per tile and tap otherwise).
    let weight = tap_major(weight, cout, cin, taps);
    let weight = &weight[..];
    for s in 0..b {
        pad_sample(
            &src[s * cin * t * h * w..(s + 1) * cin * t * h * w],
            &mut xp,
            [cin, t, h, w],
            pad,
        );
        let dst = SharedOut::new(&mut out_all[s * out_len..(s + 1) * out_len]);
        // Tasks: (output frame, tile of rows); each writes disjoint rows of every plane.
        let tasks: Vec<(usize, usize)> = (0..to)
            .flat_map(|f| (0..row_tiles).map(move |r| (f, r)))
            .collect();
        let parallelism = if tasks.len() == 1 {
            gemm::Parallelism::Rayon(0)
        } else {
            gemm::Parallelism::None
        };
        let xp = &xp;
        tasks.into_par_iter().for_each(|(f, r)| {
            let h0 = r * rows_per_tile;
            let rows = rows_per_tile.min(ho - h0);
            let n = rows * wp;
            let mut acc = vec![0.0f32; cout * n];
            let mut tap = 0;
            for a in 0..kt {
                for i in 0..kh {
                    for j in 0..kw {
                        let offset = (f + a) * hp * wp + (h0 + i) * wp + j;
                        // SAFETY: `acc` is `cout × n`; the weight view reads
                        // `weight[tap·cout·cin + co·cin + ci]` for co < cout, ci < cin;
                        // the input view reads `xp[ci·plane_p + offset + p]` for p < n,
                        // inside `xp` thanks to its `kw` spare elements.
                        unsafe {
                            gemm_f32(
                                [cout, n, cin],
                                acc.as_mut_ptr(),
                                n,
                                tap > 0,
                                Operand {
                                    ptr: weight.as_ptr().add(tap * cout * cin),
                                    row: cin as isize,
                                    col: 1,
                                },
                                Operand {
                                    ptr: xp.as_ptr().add(offset),
                                    row: plane_p as isize,
                                    col: 1,
                                },
                                parallelism,
                            );
                        }
                        tap += 1;
                    }
                }
            }
            // The valid columns, plus the bias, into rows h0.. of frame f of each plane.
            for co in 0..cout {
                let bias = bias.map_or(0.0, |bv| bv[co]);
                let start = (co * to + f) * ho * wo + h0 * wo;
                // SAFETY: tasks own disjoint (frame, rows) ranges of every plane.
                let plane = unsafe { dst.slice(start, rows * wo) };
                for (r, row) in plane.chunks_exact_mut(wo).enumerate() {
                    let from = &acc[co * n + r * wp..co * n + r * wp + wo];
                    for (o, &v) in row.iter_mut().zip(from) {
                        *o = v + bias;
                    }
                }
            }
        });
    }
    out
}

/// Copies one sample `[C, T, H, W]` into the zero-bordered `[C, T, H + 2ph, W + 2pw]`.
fn pad_sample(src: &[f32], xp: &mut [f32], [c, t, h, w]: [usize; 4], [ph, pw]: [usize; 2]) {
    let (hp, wp) = (h + 2 * ph, w + 2 * pw);
    xp.par_chunks_mut(hp * wp)
        .take(c * t)
        .enumerate()
        .for_each(|(frame, dst)| {
            let from = &src[frame * h * w..(frame + 1) * h * w];
            for (y, row) in from.chunks_exact(w).enumerate() {
                dst[(y + ph) * wp + pw..(y + ph) * wp + pw + w].copy_from_slice(row);
            }
        });
}

/// `[C_out, C_in, taps]` → `[taps, C_out, C_in]`.
fn tap_major(weight: &[f32], cout: usize, cin: usize, taps: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; weight.len()];
    out.par_chunks_mut(cout * cin)
        .enumerate()
        .for_each(|(tap, dst)| {
            for (d, from) in dst.iter_mut().zip(weight[tap..].iter().step_by(taps)) {
                *d = *from;
            }
        });
    out
}
