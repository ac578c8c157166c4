//! Weights in the encodings of the files users hold — fp8 (`float8_e4m3fn`,
//! `float8_e5m2`, optionally with ComfyUI's per-tensor scale) and GGUF's block formats
//! (Q8_0, Q4_0/1, Q5_0/1, Q2_K…Q6_K) beside F32/F16/BF16 — and their exact decoding to
//! f32.
//!
//! [`Encoding`] names a format and its block geometry; [`dequantize`] decodes whole
//! blocks (value for value as ggml and gguf-py do, see `blocks`); [`QuantTensor`] is a
//! tensor kept in its file's bytes, decoded row by row when it is used
//! ([`crate::nn::Linear::quantized`]).
//!
//! A quantized tensor's rows run along its last (PyTorch) dimension: for a Linear weight
//! `[d_out, d_in]`, each of the `d_out` rows is `d_in / block_values` whole blocks.

mod blocks;
mod fp8;
mod on_device;
mod relayout;

use std::sync::Arc;

pub use fp8::{e4m3_table, e5m2_table};
pub use on_device::DeviceQuant;

/// How a tensor's values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum Encoding {
    /// IEEE f32.
    F32,
    /// IEEE f16.
    F16,
    /// bfloat16 (the upper half of an f32).
    BF16,
    /// `float8_e4m3fn` (safetensors `F8_E4M3`).
    F8_E4M3,
    /// `float8_e5m2` (safetensors `F8_E5M2`).
    F8_E5M2,
    /// GGUF Q8_0: 32 values in 34 bytes.
    Q8_0,
    /// GGUF Q4_0: 32 values in 18 bytes.
    Q4_0,
    /// GGUF Q4_1: 32 values in 20 bytes.
    Q4_1,
    /// GGUF Q5_0: 32 values in 22 bytes.
    Q5_0,
    /// GGUF Q5_1: 32 values in 24 bytes.
    Q5_1,
    /// GGUF Q2_K: 256 values in 84 bytes.
    Q2_K,
    /// GGUF Q3_K: 256 values in 110 bytes.
    Q3_K,
    /// GGUF Q4_K: 256 values in 144 bytes.
    Q4_K,
    /// GGUF Q5_K: 256 values in 176 bytes.
    Q5_K,
    /// GGUF Q6_K: 256 values in 210 bytes.
    Q6_K,
}

impl Encoding {
    /// The encoding of a GGML type number (`ggml_type`), if supported.
    pub fn from_ggml(t: u32) -> Option<Self> {
        Some(match t {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            10 => Self::Q2_K,
            11 => Self::Q3_K,
            12 => Self::Q4_K,
            13 => Self::Q5_K,
            14 => Self::Q6_K,
            30 => Self::BF16,
            _ => return None,
        })
    }

    /// The name of a GGML type number, supported or not (for error messages).
    pub fn ggml_name(t: u32) -> String {
        const NAMES: [&str; 41] = [
            "F32",
            "F16",
            "Q4_0",
            "Q4_1",
            "Q4_2",
            "Q4_3",
            "Q5_0",
            "Q5_1",
            "Q8_0",
            "Q8_1",
            "Q2_K",
            "Q3_K",
            "Q4_K",
            "Q5_K",
            "Q6_K",
            "Q8_K",
            "IQ2_XXS",
            "IQ2_XS",
            "IQ3_XXS",
            "IQ1_S",
            "IQ4_NL",
            "IQ3_S",
            "IQ2_S",
            "IQ4_XS",
            "I8",
            "I16",
            "I32",
            "I64",
            "F64",
            "IQ1_M",
            "BF16",
            "Q4_0_4_4",
            "Q4_0_4_8",
            "Q4_0_8_8",
            "TQ1_0",
            "TQ2_0",
            "IQ4_NL_4_4",
            "IQ4_NL_4_8",
            "IQ4_NL_8_8",
            "MXFP4",
            "NVFP4",
        ];
        match NAMES.get(t as usize) {
            Some(n) => format!("{n} (ggml type {t})"),
            None => format!("ggml type {t}"),
        }
    }

    /// Name as GGUF/safetensors print it.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::F8_E4M3 => "F8_E4M3",
            Self::F8_E5M2 => "F8_E5M2",
            Self::Q8_0 => "Q8_0",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
            Self::Q2_K => "Q2_K",
            Self::Q3_K => "Q3_K",
            Self::Q4_K => "Q4_K",
            Self::Q5_K => "Q5_K",
            Self::Q6_K => "Q6_K",
        }
    }

    /// `(values, bytes)` of one block (1 value for the plain floats).
    pub fn block(self) -> (usize, usize) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::BF16 => (1, 2),
            Self::F8_E4M3 | Self::F8_E5M2 => (1, 1),
            Self::Q8_0 => (32, 34),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q5_0 => (32, 22),
            Self::Q5_1 => (32, 24),
            Self::Q2_K => (256, 84),
            Self::Q3_K => (256, 110),
            Self::Q4_K => (256, 144),
            Self::Q5_K => (256, 176),
            Self::Q6_K => (256, 210),
        }
    }

    /// Bytes of `numel` values, if `numel` is a whole number of blocks and the size fits.
    pub fn byte_len(self, numel: usize) -> Option<usize> {
        let (values, bytes) = self.block();
        numel
            .is_multiple_of(values)
            .then(|| (numel / values).checked_mul(bytes))?
    }

    /// Bytes of a row of `width` values, if `width` is a whole number of blocks.
    pub fn row_bytes(self, width: usize) -> Option<usize> {
        self.byte_len(width)
    }

    /// Whether this is one of the plain 16/32-bit floats (F32, F16, BF16).
    pub fn is_plain_float(self) -> bool {
        matches!(self, Self::F32 | Self::F16 | Self::BF16)
    }
}

/// Decodes `src` (whole blocks of `encoding`) into `out` (their values), multiplying each
/// value by `scale` in f32 when one is given (ComfyUI's scaled fp8: `w.float() ×
/// scale_weight`).
///
/// # Panics
/// When `src` is not a whole number of blocks or `out` does not hold exactly their
/// values (callers size both from [`Encoding::block`]).
pub fn dequantize(encoding: Encoding, src: &[u8], scale: Option<f32>, out: &mut [f32]) {
    let (values, bytes) = encoding.block();
    assert!(
        src.len().is_multiple_of(bytes) && src.len() / bytes * values == out.len(),
        "dequantize {}: {} bytes into {} values",
        encoding.name(),
        src.len(),
        out.len()
    );
    let per_value = |f: &dyn Fn(&[u8]) -> f32, out: &mut [f32]| {
        for (o, c) in out.iter_mut().zip(src.chunks_exact(bytes)) {
            *o = f(c);
        }
    };
    let blockwise = |f: fn(&[u8], &mut [f32]), out: &mut [f32]| {
        for (o, c) in out.chunks_exact_mut(values).zip(src.chunks_exact(bytes)) {
            f(c, o);
        }
    };
    match encoding {
        Encoding::F32 => per_value(&|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]), out),
        Encoding::F16 => per_value(
            &|c| burn::tensor::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32(),
            out,
        ),
        Encoding::BF16 => per_value(
            &|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16),
            out,
        ),
        Encoding::F8_E4M3 => {
            let t = e4m3_table();
            per_value(&|c| t[c[0] as usize], out)
        }
        Encoding::F8_E5M2 => {
            let t = e5m2_table();
            per_value(&|c| t[c[0] as usize], out)
        }
        Encoding::Q8_0 => blockwise(blocks::q8_0, out),
        Encoding::Q4_0 => blockwise(blocks::q4_0, out),
        Encoding::Q4_1 => blockwise(blocks::q4_1, out),
        Encoding::Q5_0 => blockwise(blocks::q5_0, out),
        Encoding::Q5_1 => blockwise(blocks::q5_1, out),
        Encoding::Q2_K => blockwise(blocks::q2_k, out),
        Encoding::Q3_K => blockwise(blocks::q3_k, out),
        Encoding::Q4_K => blockwise(blocks::q4_k, out),
        Encoding::Q5_K => blockwise(blocks::q5_k, out),
        Encoding::Q6_K => blockwise(blocks::q6_k, out),
    }
    if let Some(s) = scale {
        for v in out.iter_mut() {
            *v *= s;
        }
    }
}

/// A tensor kept in its file's encoding: the bytes, the encoding, the optional
/// per-tensor scale, and the PyTorch shape. Cheap to clone (the bytes are shared).
#[derive(Debug, Clone)]
pub struct QuantTensor {
    bytes: Arc<[u8]>,
    encoding: Encoding,
    scale: Option<f32>,
    shape: Vec<usize>,
}

impl QuantTensor {
    /// A tensor from its encoded bytes. `None` unless the shape's last dimension is a
    /// whole number of blocks and `bytes` is exactly the size of the shape.
    pub fn new(
        bytes: Arc<[u8]>,
        encoding: Encoding,
        scale: Option<f32>,
        shape: Vec<usize>,
    ) -> Option<Self> {
        let width = *shape.last()?;
        let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
        encoding.row_bytes(width)?;
        (encoding.byte_len(numel)? == bytes.len()).then_some(Self {
            bytes,
            encoding,
            scale,
            shape,
        })
    }

    /// The encoding.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The per-tensor scale, if any.
    pub fn scale(&self) -> Option<f32> {
        self.scale
    }

    /// The PyTorch shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The encoded bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Bytes held.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// Number of rows (the product of all dimensions but the last).
    pub fn rows(&self) -> usize {
        self.shape[..self.shape.len() - 1].iter().product()
    }

    /// Values per row (the last dimension).
    pub fn width(&self) -> usize {
        self.shape[self.shape.len() - 1]
    }

    /// Decodes rows `rows` into `out` (`rows.len() × width` values, row-major).
    ///
    /// # Panics
    /// When the range passes the last row or `out` has another length.
    pub fn dequantize_rows(&self, rows: std::ops::Range<usize>, out: &mut [f32]) {
        let row_bytes = self.bytes.len() / self.rows().max(1);
        let src = &self.bytes[rows.start * row_bytes..rows.end * row_bytes];
        dequantize(self.encoding, src, self.scale, out);
    }

    /// All values, row-major.
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows() * self.width()];
        self.dequantize_rows(0..self.rows(), &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_block() {
        let mut src = vec![0u8; 34];
        src[..2].copy_from_slice(&burn::tensor::f16::from_f32(0.5).to_bits().to_le_bytes());
        for (i, b) in src[2..].iter_mut().enumerate() {
            *b = (i as i8 - 16) as u8;
        }
        let mut out = [0f32; 32];
        dequantize(Encoding::Q8_0, &src, None, &mut out);
        assert_eq!(out[0], -8.0);
        assert_eq!(out[31], 7.5);
    }

    #[test]
    fn sizes_are_checked() {
        assert_eq!(Encoding::Q4_K.byte_len(512), Some(288));
        assert_eq!(Encoding::Q4_K.byte_len(100), None);
        assert_eq!(Encoding::Q8_0.byte_len(usize::MAX / 32 * 32), None);
        let t = QuantTensor::new(Arc::from(vec![0u8; 34]), Encoding::Q8_0, None, vec![1, 32]);
        assert!(t.is_some());
        let t = QuantTensor::new(Arc::from(vec![0u8; 34]), Encoding::Q8_0, None, vec![2, 16]);
        assert!(t.is_none(), "rows must be whole blocks");
    }

    #[test]
    fn scale_multiplies_in_f32() {
        let mut out = [0f32; 2];
        dequantize(Encoding::F8_E4M3, &[0x38, 0x3c], Some(0.25), &mut out);
        assert_eq!(out, [0.25, 0.375]);
    }
}
