//! Quantized blocks re-laid for decoding with plain tensor ops: one small unsigned code
//! per value, in the values' order, and per group of values a scale and (for the types
//! with a minimum) an offset, so that
//!
//! `value = (code − bias) · scale + offset`
//!
//! gives, in f32, the very value `blocks` decodes (the same products in the same order;
//! `(code − bias)` is an exact small integer). The scales and offsets are computed here on
//! the host exactly as `blocks` computes them (`d·sc`, `dmin·m` in f32).
//!
//! | type | code bits | bias | values per group | offset |
//! |---|---|---|---|---|
//! | Q8_0 | 8 | 128 | 32 | – |
//! | Q4_0 | 4 | 8 | 32 | – |
//! | Q4_1 | 4 | 0 | 32 | `m` |
//! | Q5_0 | 8 | 16 | 32 | – |
//! | Q5_1 | 8 | 0 | 32 | `m` |
//! | Q2_K | 4 | 0 | 16 | `−dmin·m` |
//! | Q3_K | 4 | 4 | 16 | – |
//! | Q4_K | 4 | 0 | 32 | `−dmin·m` |
//! | Q5_K | 8 | 0 | 32 | `−dmin·m` |
//! | Q6_K | 8 | 32 | 16 | – |
//!
//! fp8 keeps its byte as the code and decodes by table ([`super::e4m3_table`]).

use super::Encoding;
use super::blocks::{half, scale_min};

/// How an encoding is re-laid: code width, bias, group size, whether groups have offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Bits per code (4 or 8).
    pub bits: u32,
    /// Subtracted from each code before scaling.
    pub bias: u32,
    /// Values sharing one scale (and offset).
    pub group: usize,
    /// Whether each group also has an offset.
    pub offset: bool,
}

/// The re-layout of `encoding`, for the GGUF block types (`None` for floats and fp8).
pub fn geometry(encoding: Encoding) -> Option<Geometry> {
    let g = |bits, bias, group, offset| Geometry {
        bits,
        bias,
        group,
        offset,
    };
    Some(match encoding {
        Encoding::Q8_0 => g(8, 128, 32, false),
        Encoding::Q4_0 => g(4, 8, 32, false),
        Encoding::Q4_1 => g(4, 0, 32, true),
        Encoding::Q5_0 => g(8, 16, 32, false),
        Encoding::Q5_1 => g(8, 0, 32, true),
        Encoding::Q2_K => g(4, 0, 16, true),
        Encoding::Q3_K => g(4, 4, 16, false),
        Encoding::Q4_K => g(4, 0, 32, true),
        Encoding::Q5_K => g(8, 0, 32, true),
        Encoding::Q6_K => g(8, 32, 16, false),
        _ => return None,
    })
}

/// One block re-laid: `codes` gets its values' codes, `scales` and `offsets` its groups'
/// (`offsets` is left alone for types without). Sizes follow [`geometry`].
///
/// # Panics
/// For an encoding [`geometry`] does not cover, or slices of other sizes.
pub fn block(
    encoding: Encoding,
    src: &[u8],
    codes: &mut [u8],
    scales: &mut [f32],
    offsets: &mut [f32],
) {
    match encoding {
        Encoding::Q8_0 => {
            scales[0] = half(src, 0);
            for (c, &q) in codes.iter_mut().zip(&src[2..34]) {
                *c = q ^ 0x80; // i8 + 128
            }
        }
        Encoding::Q4_0 | Encoding::Q4_1 => {
            scales[0] = half(src, 0);
            let qs = if encoding == Encoding::Q4_1 {
                offsets[0] = half(src, 2);
                &src[4..20]
            } else {
                &src[2..18]
            };
            for j in 0..16 {
                codes[j] = qs[j] & 15;
                codes[16 + j] = qs[j] >> 4;
            }
        }
        Encoding::Q5_0 | Encoding::Q5_1 => {
            scales[0] = half(src, 0);
            let (qh, qs) = if encoding == Encoding::Q5_1 {
                offsets[0] = half(src, 2);
                (&src[4..8], &src[8..24])
            } else {
                (&src[2..6], &src[6..22])
            };
            let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
            for j in 0..16 {
                codes[j] = (qs[j] & 15) | ((((qh >> j) & 1) as u8) << 4);
                codes[16 + j] = (qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
            }
        }
        Encoding::Q2_K => {
            let (sc, qs) = (&src[0..16], &src[16..80]);
            let (d, dmin) = (half(src, 80), half(src, 82));
            for group in 0..16 {
                scales[group] = d * (sc[group] & 15) as f32;
                offsets[group] = -(dmin * (sc[group] >> 4) as f32);
                // As `blocks::q2_k` walks them: half n, shift 2s, half-group h.
                let (n, s, h) = (group / 8, (group / 2) % 4, group % 2);
                for l in 0..16 {
                    codes[16 * group + l] = (qs[32 * n + 16 * h + l] >> (2 * s)) & 3;
                }
            }
        }
        Encoding::Q3_K => {
            let (hmask, qs) = (&src[0..32], &src[32..96]);
            let d = half(src, 108);
            let sc = super::blocks::q3_k_scales(&src[96..108]);
            for group in 0..16 {
                scales[group] = d * sc[group] as f32;
                // As `blocks::q3_k` walks them; the high-bit mask moves on with each s.
                let (n, s, h) = (group / 8, (group / 2) % 4, group % 2);
                let mask = 1u8 << (4 * n + s);
                for l in 0..16 {
                    let i = 16 * h + l;
                    let q2 = (qs[32 * n + i] >> (2 * s)) & 3;
                    // q2 − (0 or 4) + 4.
                    codes[16 * group + l] = if hmask[i] & mask != 0 { q2 + 4 } else { q2 };
                }
            }
        }
        Encoding::Q4_K | Encoding::Q5_K => {
            let (d, dmin) = (half(src, 0), half(src, 2));
            let sm = &src[4..16];
            let (qh, qs) = if encoding == Encoding::Q5_K {
                (Some(&src[16..48]), &src[48..176])
            } else {
                (None, &src[16..144])
            };
            for group in 0..8 {
                let (sc, m) = scale_min(group, sm);
                scales[group] = d * sc as f32;
                offsets[group] = -(dmin * m as f32);
                let (c, nib) = (group / 2, group % 2);
                for l in 0..32 {
                    let q = qs[32 * c + l];
                    let mut v = if nib == 0 { q & 15 } else { q >> 4 };
                    if let Some(qh) = qh
                        && qh[l] & (1 << group) != 0
                    {
                        v += 16;
                    }
                    codes[32 * group + l] = v;
                }
            }
        }
        Encoding::Q6_K => {
            let (ql, qh, sc) = (&src[0..128], &src[128..192], &src[192..208]);
            let d = half(src, 208);
            for (group, s) in scales.iter_mut().enumerate() {
                *s = d * (sc[group] as i8) as f32;
            }
            for n in 0..2 {
                let (ql, qh) = (&ql[64 * n..], &qh[32 * n..]);
                let y = &mut codes[128 * n..128 * n + 128];
                for l in 0..32 {
                    let h = qh[l];
                    y[l] = (ql[l] & 15) | (h & 3) << 4;
                    y[l + 32] = (ql[l + 32] & 15) | ((h >> 2) & 3) << 4;
                    y[l + 64] = (ql[l] >> 4) | ((h >> 4) & 3) << 4;
                    y[l + 96] = (ql[l + 32] >> 4) | ((h >> 6) & 3) << 4;
                }
            }
        }
        other => panic!("no re-layout for {}", other.name()),
    }
}
