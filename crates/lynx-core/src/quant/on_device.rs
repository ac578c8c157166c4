//! [`DeviceQuant`]: a quantized weight kept on a GPU (or any burn device) in a compact
//! form and decoded there, with burn's own tensor ops, when it is used — no host round
//! trip and no f32 copy kept between calls.
//!
//! At upload each block is re-laid on the host (`relayout`): the values' codes packed
//! 4 (8-bit codes) or 8 (4-bit codes) to an `i32` word in the values' order, and per group
//! an f32 scale and, for the types with a minimum, an f32 offset. A call extracts the lanes
//! with shifts and masks, and computes `(code − bias) · scale + offset` — the products
//! ggml computes, so the values equal the host decoder's (to the last bit where the device
//! does not contract the multiply-add). fp8 keeps its byte and decodes by a 256-entry
//! table (`select`), times the per-tensor scale of scaled fp8.
//!
//! # Shapes and sizes
//! - codes `[⌈rows · width · bits / 32⌉]` (`i32`), scales and offsets `[rows, width / group]`
//!   (f32), the fp8 table `[256]`; [`DeviceQuant::decode`] gives `[rows, width]` f32.
//! - Bytes on the device per value: fp8 1; Q8_0 1.125; Q5_x 1.125 (Q5_1 1.25); Q6_K 1.25;
//!   Q4_0 0.625; Q4_1/Q4_K 0.75; Q2_K/Q3_K 0.75 (0.625). The file holds 0.26–1.06.

use burn::tensor::{DType, Device, Int, Tensor, TensorCreationOptions, TensorData};

use super::relayout::{self, Geometry};
use super::{Encoding, QuantTensor, e4m3_table, e5m2_table};

/// How the codes become values.
#[derive(Debug, Clone)]
// One per weight: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Values {
    /// fp8: `table[code] · scale`.
    Table {
        table: Tensor<1>,
        scale: Option<f32>,
    },
    /// GGUF blocks: `(code − bias) · scale[group] (+ offset[group])`.
    Affine {
        geometry: Geometry,
        scales: Tensor<2>,
        offsets: Option<Tensor<2>>,
    },
}

/// A quantized tensor on a device, decoded there when used (see the module docs).
#[derive(Debug, Clone)]
pub struct DeviceQuant {
    codes: Tensor<1, Int>,
    bits: u32,
    values: Values,
    encoding: Encoding,
    shape: Vec<usize>,
}

impl DeviceQuant {
    /// `q` re-laid and put on `device`. `None` for the plain float encodings (F32, F16,
    /// BF16), which have nothing to decode.
    pub fn upload(q: &QuantTensor, device: &Device) -> Option<Self> {
        let (rows, width) = (q.rows(), q.width());
        let encoding = q.encoding();
        let (codes, bits, values) = match encoding {
            Encoding::F8_E4M3 | Encoding::F8_E5M2 => {
                let table = match encoding {
                    Encoding::F8_E4M3 => e4m3_table(),
                    _ => e5m2_table(),
                };
                let table =
                    Tensor::from_data(TensorData::new(table.to_vec(), [256]), f32_on(device));
                let codes = int_tensor(pack(q.bytes(), 8), device);
                let scale = q.scale();
                (codes, 8, Values::Table { table, scale })
            }
            _ => {
                let geometry = relayout::geometry(encoding)?;
                let (block_values, block_bytes) = encoding.block();
                let per_block = block_values / geometry.group;
                let groups = width / geometry.group;
                let mut codes = vec![0u8; rows * width];
                let mut scales = vec![0f32; rows * groups];
                let mut offsets = vec![0f32; rows * groups];
                let blocks = q.bytes().chunks_exact(block_bytes);
                let parts = codes
                    .chunks_exact_mut(block_values)
                    .zip(scales.chunks_exact_mut(per_block))
                    .zip(offsets.chunks_exact_mut(per_block));
                for (src, ((c, s), o)) in blocks.zip(parts) {
                    relayout::block(encoding, src, c, s, o);
                }
                let codes = int_tensor(pack(&codes, geometry.bits), device);
                let f32s = |v: Vec<f32>| {
                    Tensor::from_data(TensorData::new(v, [rows, groups]), f32_on(device))
                };
                let values = Values::Affine {
                    geometry,
                    scales: f32s(scales),
                    offsets: geometry.offset.then(|| f32s(offsets)),
                };
                (codes, geometry.bits, values)
            }
        };
        Some(Self {
            codes,
            bits,
            values,
            encoding,
            shape: q.shape().to_vec(),
        })
    }

    /// Bytes [`DeviceQuant::upload`] puts on the device for `numel` values of `encoding`
    /// (`None` for the plain floats).
    pub fn byte_len_of(encoding: Encoding, numel: usize) -> Option<usize> {
        let (bits, per_group) = match encoding {
            Encoding::F8_E4M3 | Encoding::F8_E5M2 => (8, 0),
            _ => {
                let g = relayout::geometry(encoding)?;
                (g.bits as usize, if g.offset { 2 } else { 1 })
            }
        };
        let groups = relayout::geometry(encoding).map_or(0, |g| numel / g.group);
        Some(4 * (numel * bits).div_ceil(32) + 4 * groups * per_group)
    }

    /// The encoding of the file the weight came from.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The PyTorch shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Bytes held on the device: codes, scales, offsets (the fp8 table's 1 KiB aside).
    pub fn byte_len(&self) -> usize {
        let [words] = self.codes.dims();
        let groups = match &self.values {
            Values::Table { .. } => 0,
            Values::Affine {
                scales, offsets, ..
            } => {
                let [r, g] = scales.dims();
                r * g * if offsets.is_some() { 2 } else { 1 }
            }
        };
        4 * (words + groups)
    }

    /// The values, `[rows, width]` in f32 (rows: all dimensions but the last), on the
    /// device the weight lives on.
    pub fn decode(&self) -> Tensor<2> {
        let [words] = self.codes.dims();
        let rows: usize = self.shape[..self.shape.len() - 1].iter().product();
        let width = self.shape[self.shape.len() - 1];
        let lanes = (32 / self.bits) as usize;
        let mask = (1i64 << self.bits) - 1;
        // Lane k of each word holds the value at 32/bits · word + k.
        let parts: Vec<Tensor<2, Int>> = (0..lanes)
            .map(|k| {
                self.codes
                    .clone()
                    .bitwise_right_shift_scalar(k as i64 * self.bits as i64)
                    .bitwise_and_scalar(mask)
                    .unsqueeze_dim::<2>(1)
            })
            .collect();
        // fp8 pads its last word; block types fill theirs.
        let codes = Tensor::cat(parts, 1)
            .reshape([words * lanes])
            .slice(0..rows * width);
        match &self.values {
            Values::Table { table, scale } => {
                let v = table.clone().select(0, codes).reshape([rows, width]);
                match scale {
                    Some(s) => v * *s,
                    None => v,
                }
            }
            Values::Affine {
                geometry,
                scales,
                offsets,
            } => {
                let groups = width / geometry.group;
                let v = codes.reshape([rows, width]).float().cast(DType::F32);
                let v = v - geometry.bias as f32;
                let v = v.reshape([rows, groups, geometry.group])
                    * scales.clone().unsqueeze_dim::<3>(2);
                let v = match offsets {
                    Some(o) => v + o.clone().unsqueeze_dim::<3>(2),
                    None => v,
                };
                v.reshape([rows, width])
            }
        }
    }
}

/// Creation options for f32 tensors on `device`.
fn f32_on(device: &Device) -> TensorCreationOptions {
    TensorCreationOptions::new(device.clone()).with_dtype(DType::F32)
}

/// `codes` (each below 2^bits) packed low lane first into 32-bit words, the last one
/// padded with zeros.
fn pack(codes: &[u8], bits: u32) -> Vec<i32> {
    let lanes = (32 / bits) as usize;
    codes
        .chunks(lanes)
        .map(|c| {
            c.iter()
                .enumerate()
                .fold(0u32, |w, (k, &v)| w | (v as u32) << (k as u32 * bits)) as i32
        })
        .collect()
}

/// `words` as an `i32` tensor on `device`.
fn int_tensor(words: Vec<i32>, device: &Device) -> Tensor<1, Int> {
    let options = TensorCreationOptions::new(device.clone()).with_dtype(DType::I32);
    let n = words.len();
    Tensor::from_data(TensorData::new(words, [n]), options)
}
