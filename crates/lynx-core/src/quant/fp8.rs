//! The two 8-bit float formats of fp8 checkpoints, decoded exactly to f32.
//!
//! - `float8_e4m3fn` (safetensors `F8_E4M3`): 1 sign bit, 4 exponent bits (bias 7), 3
//!   mantissa bits; no infinities, `S.1111.111` is NaN; largest finite 448, smallest
//!   subnormal 2⁻⁹.
//! - `float8_e5m2` (`F8_E5M2`): 1 sign, 5 exponent bits (bias 15), 2 mantissa bits, IEEE
//!   style (exponent 31 is infinity or NaN); smallest subnormal 2⁻¹⁶.
//!
//! Every value of both is exactly representable in f32, so decoding is a table lookup.

/// `value · 2^exp` for the small exponents of these formats (exact in f32).
fn scaled(value: f32, exp: i32) -> f32 {
    value * f32::from_bits(((exp + 127) as u32) << 23)
}

fn decode_e4m3(bits: u8) -> f32 {
    let sign = if bits & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = ((bits >> 3) & 0x0f) as i32;
    let man = (bits & 0x07) as f32;
    let magnitude = match (exp, bits & 0x07) {
        (15, 7) => return f32::NAN,
        (0, _) => scaled(man / 8.0, -6),
        _ => scaled(1.0 + man / 8.0, exp - 7),
    };
    sign * magnitude
}

fn decode_e5m2(bits: u8) -> f32 {
    let sign = if bits & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = ((bits >> 2) & 0x1f) as i32;
    let man = (bits & 0x03) as f32;
    let magnitude = match exp {
        31 if bits & 0x03 == 0 => f32::INFINITY,
        31 => return f32::NAN,
        0 => scaled(man / 4.0, -14),
        _ => scaled(1.0 + man / 4.0, exp - 15),
    };
    sign * magnitude
}

fn table(decode: fn(u8) -> f32) -> [f32; 256] {
    let mut t = [0f32; 256];
    for (i, v) in t.iter_mut().enumerate() {
        *v = decode(i as u8);
    }
    t
}

/// The 256 values of `float8_e4m3fn`, indexed by their bits.
pub fn e4m3_table() -> &'static [f32; 256] {
    static TABLE: std::sync::OnceLock<[f32; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| table(decode_e4m3))
}

/// The 256 values of `float8_e5m2`, indexed by their bits.
pub fn e5m2_table() -> &'static [f32; 256] {
    static TABLE: std::sync::OnceLock<[f32; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| table(decode_e5m2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e4m3_known_values() {
        let t = e4m3_table();
        assert_eq!(t[0x00], 0.0);
        assert_eq!(t[0x38], 1.0); // exponent 7, mantissa 0
        assert_eq!(t[0x7e], 448.0);
        assert_eq!(t[0xfe], -448.0);
        assert_eq!(t[0x01], 2f32.powi(-9));
        assert_eq!(t[0x08], 2f32.powi(-6));
        assert!(t[0x7f].is_nan() && t[0xff].is_nan());
        assert_eq!(t[0x3c], 1.5);
    }

    #[test]
    fn e5m2_known_values() {
        let t = e5m2_table();
        assert_eq!(t[0x3c], 1.0); // exponent 15
        assert_eq!(t[0x7b], 57344.0);
        assert_eq!(t[0x7c], f32::INFINITY);
        assert_eq!(t[0xfc], f32::NEG_INFINITY);
        assert!(t[0x7d].is_nan());
        assert_eq!(t[0x01], 2f32.powi(-16));
        // e5m2 is the upper byte of an f16.
        for b in 0..=255u8 {
            let h = half_bits_to_f32((b as u16) << 8);
            let v = t[b as usize];
            assert!(v == h || (v.is_nan() && h.is_nan()), "{b:#x}: {v} vs {h}");
        }
    }

    /// An f16's value.
    fn half_bits_to_f32(h: u16) -> f32 {
        burn::tensor::f16::from_bits(h).to_f32()
    }
}
