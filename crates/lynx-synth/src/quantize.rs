//! Encoders of the weight formats users hold — the inverse of `lynx_core::quant`'s
//! decoders, for writing synthetic files in them: `float8_e4m3fn`, and GGUF's Q8_0,
//! Q4_K and Q6_K blocks (layouts in `lynx_core::quant::blocks`).
//!
//! Each picks its scales so that every value of a block lies inside the range the block
//! can represent, then rounds each value to the nearest step: the error of a value is at
//! most half its block's (or group's) step, as the decoders compute it. The scales are
//! chosen simply (range-covering, rounded up to f16), not searched as ggml's
//! `quantize_row_*_ref` do, so a file differs from ggml's for the same input while
//! decoding within the same bound. Values a block represents exactly (as the tests
//! build them) come back bit for bit.

// The loops index several arrays of a block by the same position, as the layouts are.
#![allow(clippy::needless_range_loop)]

use burn::tensor::f16;

/// `x` as `float8_e4m3fn` bits: rounded to the nearest value, ties to even; beyond ±448
/// saturated to ±448; NaN stays NaN (`0x7f`).
pub fn e4m3(x: f32) -> u8 {
    if x.is_nan() {
        return 0x7f;
    }
    let sign = if x.is_sign_negative() { 0x80 } else { 0 };
    let a = x.abs();
    if a >= 448.0 {
        return sign | 0x7e;
    }
    // The step at `a`: 2^(e−3) for a normal a in [2^e, 2^(e+1)), 2^−9 below 2^−6.
    let e = if a < 2f32.powi(-6) {
        -6
    } else {
        ((a.to_bits() >> 23) as i32) - 127
    };
    let step = 2f32.powi(e - 3);
    let q = (a / step).round_ties_even(); // exact: a power-of-two division
    let v = q * step;
    if v > 448.0 {
        return sign | 0x7e;
    }
    let bits = if v < 2f32.powi(-6) {
        // Subnormal (q ≤ 8; 8 · 2^−9 = 2^−6 is the first normal, bits 0x08).
        (v / 2f32.powi(-9)) as u8
    } else {
        let ve = ((v.to_bits() >> 23) as i32) - 127;
        let man = ((v / 2f32.powi(ve) - 1.0) * 8.0) as u8;
        (((ve + 7) as u8) << 3) | man
    };
    sign | bits
}

/// The smallest f16 at or above `x ≥ 0` (as f32 and as bits).
fn f16_up(x: f32) -> (f32, u16) {
    let h = f16::from_f32(x);
    let h = if h.to_f32() < x {
        f16::from_bits(h.to_bits() + 1)
    } else {
        h
    };
    (h.to_f32(), h.to_bits())
}

/// Appends the Q8_0 blocks of `x` (a multiple of 32 values): per block `d` = max |x| /
/// 127 rounded up to f16, `q = round(x / d)`.
pub fn q8_0(x: &[f32], out: &mut Vec<u8>) {
    assert!(x.len().is_multiple_of(32), "Q8_0 takes blocks of 32 values");
    for b in x.chunks_exact(32) {
        let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let (d, bits) = f16_up(amax / 127.0);
        out.extend_from_slice(&bits.to_le_bytes());
        for &v in b {
            let q = if d > 0.0 {
                (v / d).round().clamp(-127.0, 127.0)
            } else {
                0.0
            };
            out.push(q as i8 as u8);
        }
    }
}

/// Appends the Q4_K blocks of `x` (a multiple of 256 values). Per group of 32: offset
/// `m = −min(0, min x)` and step `(max x + m) / 15`; the block's `dmin` and `d` are
/// the largest of these over 63 (f16, rounded up), and each group's 6-bit `mn`, `sc`
/// are rounded up, so every value lies in `[−dmin·mn, d·sc·15 − dmin·mn]`.
pub fn q4_k(x: &[f32], out: &mut Vec<u8>) {
    assert!(
        x.len().is_multiple_of(256),
        "Q4_K takes blocks of 256 values"
    );
    for b in x.chunks_exact(256) {
        let groups: Vec<&[f32]> = b.chunks_exact(32).collect();
        let m: Vec<f32> = groups
            .iter()
            .map(|g| -g.iter().fold(0f32, |a, &v| a.min(v)))
            .collect();
        let (dmin, dmin_bits) = f16_up(m.iter().fold(0f32, |a, &v| a.max(v)) / 63.0);
        let mn: Vec<u8> = m.iter().map(|&v| ceil_ratio(v, dmin, 63)).collect();
        // The offsets as the decoder computes them, then the steps they need.
        let off: Vec<f32> = mn.iter().map(|&k| dmin * k as f32).collect();
        let need: Vec<f32> = groups
            .iter()
            .zip(&off)
            .map(|(g, &o)| (g.iter().fold(0f32, |a, &v| a.max(v)) + o) / 15.0)
            .collect();
        let (d, d_bits) = f16_up(need.iter().fold(0f32, |a, &v| a.max(v)) / 63.0);
        let sc: Vec<u8> = need.iter().map(|&v| covering(v, d, 63)).collect();
        out.extend_from_slice(&d_bits.to_le_bytes());
        out.extend_from_slice(&dmin_bits.to_le_bytes());
        let mut s = [0u8; 12];
        for j in 0..8 {
            if j < 4 {
                s[j] = sc[j];
                s[j + 4] = mn[j];
            } else {
                s[j + 4] = (sc[j] & 15) | ((mn[j] & 15) << 4);
                s[j - 4] |= (sc[j] >> 4) << 6;
                s[j] |= (mn[j] >> 4) << 6;
            }
        }
        out.extend_from_slice(&s);
        let q: Vec<u8> = (0..256)
            .map(|i| {
                let j = i / 32;
                let step = d * sc[j] as f32;
                if step > 0.0 {
                    ((b[i] + off[j]) / step).round().clamp(0.0, 15.0) as u8
                } else {
                    0
                }
            })
            .collect();
        for c in 0..4 {
            for l in 0..32 {
                out.push(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
            }
        }
    }
}

/// `ceil(v / unit)` capped at `max` (0 when `unit` is 0).
fn ceil_ratio(v: f32, unit: f32, max: u8) -> u8 {
    if unit > 0.0 {
        (v / unit).ceil().clamp(0.0, max as f32) as u8
    } else {
        0
    }
}

/// The smallest `k ≤ max` with `d · k ≥ need` as the decoder computes it (in f32).
fn covering(need: f32, d: f32, max: u8) -> u8 {
    let mut k = ceil_ratio(need, d, max);
    while k < max && d * (k as f32) < need {
        k += 1;
    }
    k
}

/// Appends the Q6_K blocks of `x` (a multiple of 256 values). Per group of 16: step
/// `max |x| / 31`; the block's `d` is the largest step over 127 (f16, rounded up) and each
/// group's signed 8-bit scale is rounded up, so `q = round(x / (d·sc))` lies in
/// [−31, 31] ⊂ [−32, 31].
pub fn q6_k(x: &[f32], out: &mut Vec<u8>) {
    assert!(
        x.len().is_multiple_of(256),
        "Q6_K takes blocks of 256 values"
    );
    for b in x.chunks_exact(256) {
        let need: Vec<f32> = b
            .chunks_exact(16)
            .map(|g| g.iter().fold(0f32, |a, v| a.max(v.abs())) / 31.0)
            .collect();
        let (d, d_bits) = f16_up(need.iter().fold(0f32, |a, &v| a.max(v)) / 127.0);
        let sc: Vec<u8> = need.iter().map(|&v| covering(v, d, 127)).collect();
        // q + 32 in 0..64.
        let q: Vec<u8> = (0..256)
            .map(|i| {
                let step = d * sc[i / 16] as f32;
                let v = if step > 0.0 {
                    (b[i] / step).round().clamp(-32.0, 31.0)
                } else {
                    0.0
                };
                (v as i32 + 32) as u8
            })
            .collect();
        let (mut ql, mut qh) = ([0u8; 128], [0u8; 64]);
        for n in 0..2 {
            let q = &q[128 * n..];
            for l in 0..32 {
                let (q1, q2, q3, q4) = (q[l], q[l + 32], q[l + 64], q[l + 96]);
                ql[64 * n + l] = (q1 & 15) | ((q3 & 15) << 4);
                ql[64 * n + l + 32] = (q2 & 15) | ((q4 & 15) << 4);
                qh[32 * n + l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
            }
        }
        out.extend_from_slice(&ql);
        out.extend_from_slice(&qh);
        out.extend_from_slice(&sc);
        out.extend_from_slice(&d_bits.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lynx_core::quant::{Encoding, dequantize, e4m3_table};

    fn decode(enc: Encoding, bytes: &[u8], n: usize) -> Vec<f32> {
        let mut out = vec![0f32; n];
        dequantize(enc, bytes, None, &mut out);
        out
    }

    /// Deterministic values of both signs and several magnitudes.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::fill::Xoshiro256pp::new(seed);
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            v.extend(rng.normal8(0.02));
        }
        v.truncate(n);
        // One group of each block far wider, one all zero.
        for x in v.iter_mut().skip(32).take(16) {
            *x *= 50.0;
        }
        for x in v.iter_mut().skip(64).take(32) {
            *x = 0.0;
        }
        v
    }

    #[test]
    fn e4m3_round_trips_every_value_and_rounds_to_nearest_even() {
        let t = e4m3_table();
        for bits in 0..=255u8 {
            let v = t[bits as usize];
            let back = e4m3(v);
            if v.is_nan() {
                assert_eq!(back, 0x7f);
            } else if v == 0.0 {
                assert_eq!(back & 0x7f, 0, "{bits:#x}");
            } else {
                assert_eq!(back, bits, "{v}");
            }
        }
        // Ties go to the even mantissa; beyond the largest value saturates.
        assert_eq!(t[e4m3(1.0625) as usize], 1.0); // between 1 and 1.125
        assert_eq!(t[e4m3(1.1875) as usize], 1.25); // between 1.125 and 1.25
        assert_eq!(t[e4m3(464.0) as usize], 448.0);
        assert_eq!(t[e4m3(1e9) as usize], 448.0);
        assert_eq!(t[e4m3(-1e9) as usize], -448.0);
        assert_eq!(t[e4m3(2f32.powi(-10)) as usize], 0.0); // half the smallest: even
        assert_eq!(t[e4m3(3.0 * 2f32.powi(-10)) as usize], 2f32.powi(-8));
        // Every value lands on a nearest neighbour.
        let finite: Vec<f32> = t.iter().copied().filter(|v| v.is_finite()).collect();
        for x in values(4096, 3) {
            let x = x * 1000.0;
            let got = t[e4m3(x) as usize];
            let best = finite
                .iter()
                .map(|&c| (c - x.clamp(-448.0, 448.0)).abs())
                .fold(f32::INFINITY, f32::min);
            assert_eq!((got - x.clamp(-448.0, 448.0)).abs(), best, "{x}");
        }
    }

    #[test]
    fn q8_0_error_is_half_a_step_and_exact_values_round_trip() {
        let x = values(1024, 1);
        let mut b = Vec::new();
        q8_0(&x, &mut b);
        assert_eq!(b.len(), 1024 / 32 * 34);
        let y = decode(Encoding::Q8_0, &b, x.len());
        for (blk, (xs, ys)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
            let d = f16::from_bits(u16::from_le_bytes([b[34 * blk], b[34 * blk + 1]])).to_f32();
            for (a, c) in xs.iter().zip(ys) {
                assert!((a - c).abs() <= 0.5 * d * (1.0 + 1e-6), "{a} {c} {d}");
            }
        }
        // d · q for a power-of-two d and q reaching ±127.
        let d = 2f32.powi(-10);
        let exact: Vec<f32> = (0..64).map(|i| d * ((i * 37) % 255 - 127) as f32).collect();
        let exact: Vec<f32> = exact
            .chunks(32)
            .flat_map(|c| {
                let mut c = c.to_vec();
                c[0] = 127.0 * d;
                c
            })
            .collect();
        let mut b = Vec::new();
        q8_0(&exact, &mut b);
        assert_eq!(decode(Encoding::Q8_0, &b, 64), exact);
    }

    #[test]
    fn q4_k_error_is_half_a_step_and_exact_values_round_trip() {
        let x = values(512, 2);
        let mut b = Vec::new();
        q4_k(&x, &mut b);
        assert_eq!(b.len(), 2 * 144);
        let y = decode(Encoding::Q4_K, &b, x.len());
        for (blk, (xs, ys)) in x.chunks(256).zip(y.chunks(256)).enumerate() {
            let src = &b[144 * blk..144 * (blk + 1)];
            let d = f16::from_bits(u16::from_le_bytes([src[0], src[1]])).to_f32();
            let sc = |j: usize| -> f32 {
                let s = &src[4..16];
                (if j < 4 {
                    s[j] & 63
                } else {
                    (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4)
                }) as f32
            };
            for (i, (a, c)) in xs.iter().zip(ys).enumerate() {
                let half_step = 0.5 * d * sc(i / 32);
                assert!((a - c).abs() <= half_step * 1.0001 + 1e-7, "{i}: {a} {c}");
            }
        }
        // Groups d·sc·q − dmin·mn with every q of 0..16, one group at sc = mn = 63.
        let (d, dmin) = (2f32.powi(-12), 2f32.powi(-11));
        let mut exact = Vec::new();
        for j in 0..8u32 {
            let (sc, mn) = if j == 0 { (63, 63) } else { (5 * j, 7 * j) };
            for i in 0..32 {
                let q = if i < 16 { i } else { 31 - i };
                exact.push(d * sc as f32 * q as f32 - dmin * mn as f32);
            }
        }
        let mut b = Vec::new();
        q4_k(&exact, &mut b);
        assert_eq!(decode(Encoding::Q4_K, &b, 256), exact);
    }

    #[test]
    fn q6_k_error_is_half_a_step_and_exact_values_round_trip() {
        let x = values(512, 4);
        let mut b = Vec::new();
        q6_k(&x, &mut b);
        assert_eq!(b.len(), 2 * 210);
        let y = decode(Encoding::Q6_K, &b, x.len());
        for (blk, (xs, ys)) in x.chunks(256).zip(y.chunks(256)).enumerate() {
            let src = &b[210 * blk..210 * (blk + 1)];
            let d = f16::from_bits(u16::from_le_bytes([src[208], src[209]])).to_f32();
            for (i, (a, c)) in xs.iter().zip(ys).enumerate() {
                let half_step = 0.5 * d * (src[192 + i / 16] as i8) as f32;
                assert!((a - c).abs() <= half_step * 1.0001 + 1e-7, "{i}: {a} {c}");
            }
        }
        // d·sc·k with k reaching ±31, one group at sc = 127.
        let d = 2f32.powi(-14);
        let mut exact = Vec::new();
        for g in 0..16i32 {
            let sc = if g == 0 { 127 } else { 3 * g + 1 };
            for i in 0..16i32 {
                let k = if i == 0 { 31 } else { (i * 5) % 63 - 31 };
                exact.push(d * sc as f32 * k as f32);
            }
        }
        let mut b = Vec::new();
        q6_k(&exact, &mut b);
        assert_eq!(decode(Encoding::Q6_K, &b, 256), exact);
    }
}
