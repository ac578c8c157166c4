//! GGUF block formats decoded to f32, value for value as ggml's `dequantize_row_*` and
//! gguf-py's `quants.py` compute them (same f32 operations in the same order, so the
//! results are bit-identical).
//!
//! Each function decodes one block: `src` holds exactly the block's bytes, `out` exactly
//! its values. Layouts (`d`, `dmin`, `m` are little-endian f16):
//!
//! | type | values / bytes | layout |
//! |---|---|---|
//! | Q8_0 | 32 / 34 | `d`, `qs[32]` i8 |
//! | Q4_0 | 32 / 18 | `d`, `qs[16]` |
//! | Q4_1 | 32 / 20 | `d`, `m`, `qs[16]` |
//! | Q5_0 | 32 / 22 | `d`, `qh` u32, `qs[16]` |
//! | Q5_1 | 32 / 24 | `d`, `m`, `qh` u32, `qs[16]` |
//! | Q2_K | 256 / 84 | `scales[16]`, `qs[64]`, `d`, `dmin` |
//! | Q3_K | 256 / 110 | `hmask[32]`, `qs[64]`, `scales[12]`, `d` |
//! | Q4_K | 256 / 144 | `d`, `dmin`, `scales[12]`, `qs[128]` |
//! | Q5_K | 256 / 176 | `d`, `dmin`, `scales[12]`, `qh[32]`, `qs[128]` |
//! | Q6_K | 256 / 210 | `ql[128]`, `qh[64]`, `scales[16]` i8, `d` |

// The loops index several arrays of a block by the same position, as the layouts are
// written; iterator chains would hide that.
#![allow(clippy::needless_range_loop)]

use burn::tensor::f16;

/// The f16 at `src[at..at + 2]` (little-endian) as f32.
pub(super) fn half(src: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([src[at], src[at + 1]])).to_f32()
}

pub(super) fn q8_0(src: &[u8], out: &mut [f32]) {
    let d = half(src, 0);
    for (o, &q) in out.iter_mut().zip(&src[2..34]) {
        *o = d * (q as i8) as f32;
    }
}

/// Q4_0 (`min = None`) and Q4_1 (`min = Some(m)`).
fn q4(d: f32, min: Option<f32>, qs: &[u8], out: &mut [f32]) {
    let (lo, hi) = out.split_at_mut(16);
    for j in 0..16 {
        let (a, b) = ((qs[j] & 15) as i32, (qs[j] >> 4) as i32);
        match min {
            None => {
                lo[j] = (a - 8) as f32 * d;
                hi[j] = (b - 8) as f32 * d;
            }
            Some(m) => {
                lo[j] = a as f32 * d + m;
                hi[j] = b as f32 * d + m;
            }
        }
    }
}

pub(super) fn q4_0(src: &[u8], out: &mut [f32]) {
    q4(half(src, 0), None, &src[2..18], out);
}

pub(super) fn q4_1(src: &[u8], out: &mut [f32]) {
    q4(half(src, 0), Some(half(src, 2)), &src[4..20], out);
}

/// Q5_0 (`min = None`, values offset by −16) and Q5_1 (`min = Some(m)`).
fn q5(d: f32, min: Option<f32>, qh: &[u8], qs: &[u8], out: &mut [f32]) {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let (lo, hi) = out.split_at_mut(16);
    for j in 0..16 {
        let a = ((qs[j] & 15) as u32 | ((qh >> j) & 1) << 4) as i32;
        let b = ((qs[j] >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4) as i32;
        match min {
            None => {
                lo[j] = (a - 16) as f32 * d;
                hi[j] = (b - 16) as f32 * d;
            }
            Some(m) => {
                lo[j] = a as f32 * d + m;
                hi[j] = b as f32 * d + m;
            }
        }
    }
}

pub(super) fn q5_0(src: &[u8], out: &mut [f32]) {
    q5(half(src, 0), None, &src[2..6], &src[6..22], out);
}

pub(super) fn q5_1(src: &[u8], out: &mut [f32]) {
    q5(
        half(src, 0),
        Some(half(src, 2)),
        &src[4..8],
        &src[8..24],
        out,
    );
}

pub(super) fn q2_k(src: &[u8], out: &mut [f32]) {
    let (scales, qs) = (&src[0..16], &src[16..80]);
    let (d, dmin) = (half(src, 80), half(src, 82));
    let mut group = 0;
    for n in 0..2 {
        let q = &qs[32 * n..32 * n + 32];
        for s in 0..4 {
            let shift = 2 * s;
            for half_ in 0..2 {
                let sc = scales[group];
                let dl = d * (sc & 15) as f32;
                let ml = dmin * (sc >> 4) as f32;
                let base = 128 * n + 32 * s + 16 * half_;
                for l in 0..16 {
                    let q2 = (q[16 * half_ + l] >> shift) & 3;
                    out[base + l] = dl * q2 as f32 - ml;
                }
                group += 1;
            }
        }
    }
}

/// The 16 signed 6-bit scales of a Q3_K block from their 12 packed bytes.
pub(super) fn q3_k_scales(raw: &[u8]) -> [i32; 16] {
    let word =
        |i: usize| u32::from_le_bytes([raw[4 * i], raw[4 * i + 1], raw[4 * i + 2], raw[4 * i + 3]]);
    let (a0, a1, a2) = (word(0), word(1), word(2));
    let (low, two) = (0x0f0f_0f0fu32, 0x0303_0303u32);
    let packed = [
        (a0 & low) | ((a2 & two) << 4),
        (a1 & low) | (((a2 >> 2) & two) << 4),
        ((a0 >> 4) & low) | (((a2 >> 4) & two) << 4),
        ((a1 >> 4) & low) | (((a2 >> 6) & two) << 4),
    ];
    let mut scales = [0i32; 16];
    for (i, s) in scales.iter_mut().enumerate() {
        *s = (packed[i / 4].to_le_bytes()[i % 4] as i8) as i32 - 32;
    }
    scales
}

pub(super) fn q3_k(src: &[u8], out: &mut [f32]) {
    let (hmask, qs) = (&src[0..32], &src[32..96]);
    let d = half(src, 108);
    let scales = q3_k_scales(&src[96..108]);
    let mut group = 0;
    let mut mask = 1u8;
    for n in 0..2 {
        let q = &qs[32 * n..32 * n + 32];
        for s in 0..4 {
            let shift = 2 * s;
            for half_ in 0..2 {
                let dl = d * scales[group] as f32;
                let base = 128 * n + 32 * s + 16 * half_;
                for l in 0..16 {
                    let i = 16 * half_ + l;
                    let q2 = ((q[i] >> shift) & 3) as i32;
                    let high = if hmask[i] & mask != 0 { 0 } else { 4 };
                    out[base + l] = dl * (q2 - high) as f32;
                }
                group += 1;
            }
            mask <<= 1;
        }
    }
}

/// Scale and min of group `j` (0..8) of a Q4_K/Q5_K block's 12 packed bytes.
pub(super) fn scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Q4_K (`qh = None`) and Q5_K (`qh = Some(high bits)`).
fn k4_5(src: &[u8], qh: Option<&[u8]>, qs: &[u8], out: &mut [f32]) {
    let (d, dmin) = (half(src, 0), half(src, 2));
    let scales = &src[4..16];
    for c in 0..4 {
        let q = &qs[32 * c..32 * c + 32];
        for nib in 0..2 {
            let (sc, mn) = scale_min(2 * c + nib, scales);
            let (dl, ml) = (d * sc as f32, dmin * mn as f32);
            let bit = 1u8 << (2 * c + nib);
            for l in 0..32 {
                let mut v = if nib == 0 { q[l] & 15 } else { q[l] >> 4 };
                if let Some(qh) = qh
                    && qh[l] & bit != 0
                {
                    v += 16;
                }
                out[64 * c + 32 * nib + l] = dl * v as f32 - ml;
            }
        }
    }
}

pub(super) fn q4_k(src: &[u8], out: &mut [f32]) {
    k4_5(src, None, &src[16..144], out);
}

pub(super) fn q5_k(src: &[u8], out: &mut [f32]) {
    k4_5(src, Some(&src[16..48]), &src[48..176], out);
}

pub(super) fn q6_k(src: &[u8], out: &mut [f32]) {
    let (ql, qh, sc) = (&src[0..128], &src[128..192], &src[192..208]);
    let d = half(src, 208);
    for n in 0..2 {
        let (ql, qh, sc) = (&ql[64 * n..], &qh[32 * n..], &sc[8 * n..]);
        let y = &mut out[128 * n..128 * n + 128];
        for l in 0..32 {
            let i = l / 16;
            let h = qh[l];
            let q1 = ((ql[l] & 15) | (h & 3) << 4) as i32 - 32;
            let q2 = ((ql[l + 32] & 15) | ((h >> 2) & 3) << 4) as i32 - 32;
            let q3 = ((ql[l] >> 4) | ((h >> 4) & 3) << 4) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | ((h >> 6) & 3) << 4) as i32 - 32;
            let s = |k: usize| d * (sc[k] as i8) as f32;
            y[l] = s(i) * q1 as f32;
            y[l + 32] = s(i + 2) * q2 as f32;
            y[l + 64] = s(i + 4) * q3 as f32;
            y[l + 96] = s(i + 6) * q4 as f32;
        }
    }
}
