//! [`Linear`]: `torch.nn.Linear` as lynx-rs computes it, `y = x·Wᵀ + b`, plus the
//! low-rank terms of LoRAs that are applied on the fly rather than fused into `W`
//! (`y += s·(x·Aᵀ)·Bᵀ`, as PEFT's `lora.Linear.forward` computes them).
//!
//! PyTorch stores the weight `[d_out, d_in]`; it is laid out `[d_in, d_out]` once at load
//! ([`super::transposed`]), so products never copy it. `lynx_store::Loader::linear` reads
//! one from a checkpoint.
//!
//! A weight may also stay in its file's encoding ([`Linear::quantized`]: fp8 bytes and
//! scale, GGUF blocks, in PyTorch's `[d_out, d_in]` order, one row per output): it is
//! decoded when used — on the CPU a tile of output rows at a time straight into the GEMM,
//! never the whole weight in f32; on other backends kept on the device re-laid for burn's
//! ops ([`DeviceQuant`]) and decoded there for the call. Low-rank terms apply the same way.
//!
//! # Shapes
//! - weight `[d_in, d_out]` (model dtype), bias `[d_out]`;
//! - a [`LowRank`] term: `down` `[d_in, r]`, `up` `[r, d_out]` (stored transposed, as the
//!   weight is), and its scale `strength · alpha / r`;
//! - input `[..., d_in]`, output `[..., d_out]`.

use burn::module::{Module, Param};
use burn::tensor::{DType, Tensor, TensorData};

use crate::quant::{DeviceQuant, QuantTensor};

/// A linear layer: its weight, optional bias, and low-rank terms added to every product.
#[derive(Module, Debug)]
pub struct Linear {
    /// `[d_in, d_out]`, laid out for products (a `[1, 1]` stand-in when the weight is
    /// kept quantized).
    weight: Param<Tensor<2>>,
    /// `[d_out]`.
    bias: Option<Param<Tensor<1>>>,
    /// Low-rank terms applied at every call (LoRAs kept apart from the weight).
    #[module(skip)]
    low_rank: Vec<LowRank>,
    /// The weight kept in its file's encoding, `[d_out, d_in]`; `weight` is then a stand-in
    /// of the compute dtype.
    #[module(skip)]
    quantized: Option<Encoded>,
}

/// Where a weight kept in its file's encoding lives.
#[derive(Debug, Clone)]
enum Encoded {
    /// The file's bytes in host memory (the CPU decodes them tile by tile).
    Host(QuantTensor),
    /// Re-laid on a GPU device, decoded there.
    Device(Box<DeviceQuant>),
}

impl Encoded {
    fn shape(&self) -> &[usize] {
        match self {
            Self::Host(q) => q.shape(),
            Self::Device(q) => q.shape(),
        }
    }

    fn byte_len(&self) -> usize {
        match self {
            Self::Host(q) => q.byte_len(),
            Self::Device(q) => q.byte_len(),
        }
    }
}

/// One low-rank term `s·(x·Aᵀ)·Bᵀ` of a LoRA applied on the fly: `A` = `lora_down`
/// (`lora_A`) `[r, d_in]`, `B` = `lora_up` (`lora_B`) `[d_out, r]`, `s` = strength ·
/// alpha / r.
#[derive(Debug, Clone)]
pub struct LowRank {
    /// `Aᵀ`, `[d_in, r]`.
    down: Tensor<2>,
    /// `Bᵀ`, `[r, d_out]`.
    up: Tensor<2>,
    /// `s`.
    scale: f64,
}

impl LowRank {
    /// A term from PyTorch's layouts: `down` `[r, d_in]` (`lora_down` / `lora_A`), `up`
    /// `[d_out, r]` (`lora_up` / `lora_B`), scaled by `scale`. Both are laid out for
    /// products here, once.
    pub fn new(down: Tensor<2>, up: Tensor<2>, scale: f64) -> Self {
        Self {
            down: super::transposed(down),
            up: super::transposed(up),
            scale,
        }
    }

    /// `[d_in, d_out]` of the product this term adds to.
    pub fn dims(&self) -> [usize; 2] {
        [self.down.dims()[0], self.up.dims()[1]]
    }

    /// The rank `r`.
    pub fn rank(&self) -> usize {
        self.down.dims()[1]
    }

    /// The scale `s`.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// `s·(x·Aᵀ)·Bᵀ` in `x`'s dtype.
    ///
    /// # Shapes
    /// - `x` `[..., d_in]`, output `[..., d_out]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dtype = x.dtype();
        let down = self.down.clone().cast(dtype);
        let up = self.up.clone().cast(dtype);
        let h = x.matmul(down.unsqueeze::<D>());
        h.matmul(up.unsqueeze::<D>()) * self.scale
    }
}

impl Linear {
    /// A layer from its weight laid out `[d_in, d_out]` (see [`super::transposed`]) and
    /// optional bias `[d_out]`.
    pub fn new(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Self {
        Self {
            weight: Param::from_tensor(weight),
            bias: bias.map(Param::from_tensor),
            low_rank: Vec::new(),
            quantized: None,
        }
    }

    /// A layer whose weight stays in its file's encoding: `weight` `[d_out, d_in]` (one
    /// encoded row per output), decoded when used and computed in `dtype` on `device`
    /// (the bias, `[d_out]`, is given in that dtype). On a device other than the CPU the
    /// weight is re-laid and uploaded now ([`DeviceQuant`]) and the host bytes let go.
    ///
    /// # Panics
    /// When `weight` is not 2-D (the loader checks shapes first).
    pub fn quantized(
        weight: QuantTensor,
        bias: Option<Tensor<1>>,
        device: &burn::tensor::Device,
        dtype: DType,
    ) -> Self {
        assert_eq!(weight.shape().len(), 2, "a Linear weight is 2-D");
        let encoded = match crate::device::is_cpu(device) {
            true => None,
            false => DeviceQuant::upload(&weight, device).map(|q| Encoded::Device(Box::new(q))),
        };
        Self {
            weight: Param::from_tensor(Tensor::zeros([1, 1], (device, dtype))),
            bias: bias.map(Param::from_tensor),
            low_rank: Vec::new(),
            quantized: Some(encoded.unwrap_or(Encoded::Host(weight))),
        }
    }

    /// The weight in its file's bytes, when it is kept so in host memory (on the CPU).
    pub fn quantized_weight(&self) -> Option<&QuantTensor> {
        match &self.quantized {
            Some(Encoded::Host(q)) => Some(q),
            _ => None,
        }
    }

    /// The weight re-laid on a GPU device, when it is kept so.
    pub fn device_quantized_weight(&self) -> Option<&DeviceQuant> {
        match &self.quantized {
            Some(Encoded::Device(q)) => Some(q),
            _ => None,
        }
    }

    /// Whether the weight is kept in its file's encoding (on the host or a device).
    pub fn is_quantized(&self) -> bool {
        self.quantized.is_some()
    }

    /// Bytes the weight and bias hold (encoded bytes for a quantized weight: the file's on
    /// the CPU, the re-laid form's on a device).
    pub fn weight_bytes(&self) -> u64 {
        let bias = self
            .bias
            .as_ref()
            .map(|b| (b.dims()[0] * b.val().dtype().size()) as u64)
            .unwrap_or(0);
        match &self.quantized {
            Some(q) => q.byte_len() as u64 + bias,
            None => {
                let [a, b] = self.weight.dims();
                (a * b * self.dtype().size()) as u64 + bias
            }
        }
    }

    /// This layer with `term` added to every product.
    pub fn with_low_rank(mut self, term: LowRank) -> Self {
        self.low_rank.push(term);
        self
    }

    /// `[d_in, d_out]`.
    pub fn dims(&self) -> [usize; 2] {
        match &self.quantized {
            Some(q) => [q.shape()[1], q.shape()[0]],
            None => self.weight.dims(),
        }
    }

    /// Input width.
    pub fn d_in(&self) -> usize {
        self.dims()[0]
    }

    /// Output width.
    pub fn d_out(&self) -> usize {
        self.dims()[1]
    }

    /// The dtype of the weight (the compute dtype, for a quantized one).
    pub fn dtype(&self) -> DType {
        self.weight.val().dtype()
    }

    /// The weight, `[d_in, d_out]`. A quantized weight is decoded whole for this call
    /// (products decode it tile by tile instead).
    pub fn weight(&self) -> Tensor<2> {
        match &self.quantized {
            Some(q) => self.decoded(q).transpose(),
            None => self.weight.val(),
        }
    }

    /// `q` decoded in the compute dtype on the weight's device, `[d_out, d_in]`: on the
    /// host then uploaded for host bytes, on the device for a re-laid weight.
    fn decoded(&self, q: &Encoded) -> Tensor<2> {
        let stand_in = self.weight.val();
        let w = match q {
            Encoded::Device(q) => q.decode(),
            Encoded::Host(q) => {
                let data = TensorData::new(q.to_f32(), [q.shape()[0], q.shape()[1]]);
                Tensor::<2>::from_data(data, (&stand_in.device(), DType::F32))
            }
        };
        w.cast(stand_in.dtype())
    }

    /// The bias, `[d_out]`.
    pub fn bias(&self) -> Option<Tensor<1>> {
        self.bias.as_ref().map(Param::val)
    }

    /// The low-rank terms applied at every call.
    pub fn low_rank(&self) -> &[LowRank] {
        &self.low_rank
    }

    /// `x·W + b` alone (no low-rank term), with burn's ops (a quantized weight decoded
    /// for the call).
    pub(super) fn forward_plain<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let y = match &self.quantized {
            Some(q) => {
                let w = self.decoded(q).cast(x.dtype());
                x.matmul(w.transpose().unsqueeze::<D>())
            }
            None => x.matmul(self.weight.val().unsqueeze::<D>()),
        };
        match &self.bias {
            Some(b) => y + b.val().unsqueeze::<D>(),
            None => y,
        }
    }
}
