//! The gated feed-forward block (transformers `UMT5DenseGatedActDense`).

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{DType, Tensor};

use crate::config::Activation;

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
    pub wi_0: Linear,
    pub wi_1: Linear,
    pub wo: Linear,
    #[module(skip)]
    pub activation: Activation,
}

impl DenseGatedActDense {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = activate(self.activation, self.wi_0.forward(x.clone()));
        let h = gate * self.wi_1.forward(x);
        let wo_dtype = self.wo.weight.val().dtype();
        let h = if h.dtype() != wo_dtype {
            h.cast(wo_dtype)
        } else {
            h
        };
        self.wo.forward(h)
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
