//! [`Linear`]: `torch.nn.Linear` as lynx-rs computes it, `y = x·Wᵀ + b`, plus the
//! low-rank terms of LoRAs that are applied on the fly rather than fused into `W`
//! (`y += s·(x·Aᵀ)·Bᵀ`, as PEFT's `lora.Linear.forward` computes them).
//!
//! PyTorch stores the weight `[d_out, d_in]`; it is laid out `[d_in, d_out]` once at load
//! ([`super::transposed`]), so products never copy it. `lynx_store::Loader::linear` reads
//! one from a checkpoint.
//!
//! # Shapes
//! - weight `[d_in, d_out]` (model dtype), bias `[d_out]`;
//! - a [`LowRank`] term: `down` `[d_in, r]`, `up` `[r, d_out]` (stored transposed, as the
//!   weight is), and its scale `strength · alpha / r`;
//! - input `[..., d_in]`, output `[..., d_out]`.

use burn::module::{Module, Param};
use burn::tensor::{DType, Tensor};

/// A linear layer: its weight, optional bias, and low-rank terms added to every product.
#[derive(Module, Debug)]
pub struct Linear {
    /// `[d_in, d_out]`, laid out for products.
    weight: Param<Tensor<2>>,
    /// `[d_out]`.
    bias: Option<Param<Tensor<1>>>,
    /// Low-rank terms applied at every call (LoRAs kept apart from the weight).
    #[module(skip)]
    low_rank: Vec<LowRank>,
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
        }
    }

    /// This layer with `term` added to every product.
    pub fn with_low_rank(mut self, term: LowRank) -> Self {
        self.low_rank.push(term);
        self
    }

    /// `[d_in, d_out]`.
    pub fn dims(&self) -> [usize; 2] {
        self.weight.dims()
    }

    /// Input width.
    pub fn d_in(&self) -> usize {
        self.dims()[0]
    }

    /// Output width.
    pub fn d_out(&self) -> usize {
        self.dims()[1]
    }

    /// The dtype of the weight.
    pub fn dtype(&self) -> DType {
        self.weight.val().dtype()
    }

    /// The weight, `[d_in, d_out]`.
    pub fn weight(&self) -> Tensor<2> {
        self.weight.val()
    }

    /// The bias, `[d_out]`.
    pub fn bias(&self) -> Option<Tensor<1>> {
        self.bias.as_ref().map(Param::val)
    }

    /// The low-rank terms applied at every call.
    pub fn low_rank(&self) -> &[LowRank] {
        &self.low_rank
    }

    /// `x·W + b` alone (no low-rank term), with burn's ops.
    pub(super) fn forward_plain<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let y = x.matmul(self.weight.val().unsqueeze::<D>());
        match &self.bias {
            Some(b) => y + b.val().unsqueeze::<D>(),
            None => y,
        }
    }
}
