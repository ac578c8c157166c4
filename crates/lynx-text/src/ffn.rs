//! The gated feed-forward block (transformers `UMT5DenseGatedActDense`).

use burn::module::Module;
use burn::tensor::{DType, Tensor};
use lynx_core::nn::Linear;
use lynx_core::nn::linear;
use lynx_store::Loader;

use crate::config::{Activation, Umt5Config};

/// `wo(act(wi_0(x)) · wi_1(x))`.
///
/// `wo` may be kept in f32 while the rest is f16 (transformers'
/// `_keep_in_fp32_modules = ["wo"]`, which avoids overflow in half precision): the
/// gated product is then cast to f32 before it.
///
/// # Shapes
/// - input: `[batch, seq, d_model]`, output: `[batch, seq, d_model]` in `wo`'s dtype
/// - `wi_0`, `wi_1`: `d_model → d_ff`; `wo`: `d_ff → d_model`
#[derive(Module, Debug)]
pub struct DenseGatedActDense {
    wi_0: Linear,
    wi_1: Linear,
    wo: Linear,
    #[module(skip)]
    activation: Activation,
}

impl DenseGatedActDense {
    /// Loads `DenseReluDense` (`wi_0`, `wi_1`: d_model → d_ff, `wo`: d_ff → d_model, no
    /// biases) in the loader's dtype, `wo` in f32 for f16 models.
    pub fn load(w: &Loader, cfg: &Umt5Config) -> Self {
        let (d, ff) = (cfg.d_model, cfg.d_ff);
        // `wi_0`, `wi_1`, `wo`: `state_dict()` order.
        let wi_0 = w.sub("wi_0").linear(d, ff, false);
        let wi_1 = w.sub("wi_1").linear(d, ff, false);
        let wo = if wo_dtype(w.dtype()) == DType::F32 && w.dtype() != DType::F32 {
            // Kept in f32 like transformers' `_keep_in_fp32_modules` does for f16.
            w.sub("wo").linear_f32(ff, d, false)
        } else {
            w.sub("wo").linear(ff, d, false)
        };
        Self {
            wi_0,
            wi_1,
            wo,
            activation: cfg.activation,
        }
    }

    /// # Shapes
    /// - input `[batch, seq, d_model]` → `[batch, seq, d_model]` in `wo`'s dtype.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = activate(self.activation, linear(&self.wi_0, x.clone()));
        let h = gate * linear(&self.wi_1, x);
        let wo_dtype = self.wo.dtype();
        let h = if h.dtype() != wo_dtype {
            h.cast(wo_dtype)
        } else {
            h
        };
        linear(&self.wo, h)
    }
}

fn activate(act: Activation, x: Tensor<3>) -> Tensor<3> {
    use burn::tensor::activation;
    match act {
        Activation::GeluTanh => lynx_core::nn::gelu_tanh(x),
        Activation::Gelu => activation::gelu(x),
        Activation::Relu => activation::relu(x),
        Activation::Silu => activation::silu(x),
    }
}

/// The dtype `wo` is kept in for a model of `dtype` (f32 when the model is f16).
pub fn wo_dtype(dtype: DType) -> DType {
    if dtype == DType::F16 {
        DType::F32
    } else {
        dtype
    }
}
