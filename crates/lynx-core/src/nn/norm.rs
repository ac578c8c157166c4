//! RMS and layer norms computed in f32 whatever the activation dtype, as the reference's
//! `FP32LayerNorm`, `torch.nn.RMSNorm` and T5's layer norm do.

use burn::module::{Module, Param};
use burn::tensor::{DType, Tensor};

/// RMS norm over the last axis with a learned scale:
/// `x / sqrt(mean(x²) + eps) * weight` (no mean subtraction, no bias).
///
/// # Shapes
/// - input: `[..., dim]`, output: same shape and dtype.
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// `[dim]`, f32.
    pub weight: Param<Tensor<1>>,
    /// Added to the mean square.
    pub eps: f64,
}

impl RmsNorm {
    /// An RMS norm with the learned scale `weight` `[dim]` (f32; read from a checkpoint
    /// by `lynx_store::Loader::rms_norm`).
    pub fn new(weight: Param<Tensor<1>>, eps: f64) -> Self {
        Self { weight, eps }
    }

    /// An RMS norm without learned scale (`elementwise_affine=False`).
    pub fn plain(dim: usize, eps: f64, device: &burn::tensor::Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([dim], (device, DType::F32))),
            eps,
        }
    }

    /// Normalises over the last axis.
    ///
    /// # Shapes
    /// - input `[..., dim]`, output: same shape and dtype.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if let Some(y) = super::fused::rms_norm_fast(&x, &self.weight.val(), self.eps) {
            return y;
        }
        let dtype = x.dtype();
        let x = x.cast(DType::F32);
        let rms = (x.clone().square().mean_dim(D - 1) + self.eps).sqrt();
        let y = x / rms * self.weight.val().unsqueeze::<D>();
        y.cast(dtype)
    }
}

/// Layer norm over the last axis, optionally with learned `weight`/`bias`.
///
/// # Shapes
/// - input: `[..., dim]`, output: same shape; computed in f32, returned in f32 (the
///   reference's `FP32LayerNorm` output feeds f32 modulation).
#[derive(Module, Debug)]
pub struct LayerNorm {
    /// `[dim]`, f32; ones when the norm has no affine part.
    pub weight: Param<Tensor<1>>,
    /// `[dim]`, f32; `None` without affine part.
    pub bias: Option<Param<Tensor<1>>>,
    /// Added to the variance.
    pub eps: f64,
}

impl LayerNorm {
    /// A layer norm without learned parameters.
    pub fn plain(dim: usize, eps: f64, device: &burn::tensor::Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([dim], (device, DType::F32))),
            bias: None,
            eps,
        }
    }

    /// A layer norm with learned `weight` and `bias` `[dim]` (f32; read from a checkpoint
    /// by `lynx_store::Loader::layer_norm`).
    pub fn new(weight: Param<Tensor<1>>, bias: Param<Tensor<1>>, eps: f64) -> Self {
        Self {
            weight,
            bias: Some(bias),
            eps,
        }
    }

    /// Normalises over the last axis, in f32.
    ///
    /// # Shapes
    /// - input `[..., dim]` (any float dtype), output: same shape, f32.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        burn::tensor::module::layer_norm(
            x.cast(DType::F32),
            self.weight.val(),
            self.bias.as_ref().map(Param::val),
            self.eps,
        )
    }
}
