//! `WanAttentionBlock`: single-head self-attention over the pixels of each frame.

use burn::module::{Module, Param};
use burn::tensor::Tensor;

use crate::norm::ChannelRmsNorm;

/// `x + proj(attention(to_qkv(norm(x))))`, each frame on its own: the `H·W` pixels are
/// the tokens, the `C` channels one head. `to_qkv` and `proj` are 1×1 convolutions,
/// kept here as matrices.
///
/// # Shapes
/// - `to_qkv_weight`: `[C, 3C]` (transposed from upstream `[3C, C, 1, 1]`), bias `[3C]`
/// - `proj_weight`: `[C, C]` (transposed), bias `[C]`
/// - input `[B, C, T, H, W]` → same shape
#[derive(Module, Debug)]
pub struct AttentionBlock {
    pub norm: ChannelRmsNorm,
    pub to_qkv_weight: Param<Tensor<2>>,
    pub to_qkv_bias: Param<Tensor<1>>,
    pub proj_weight: Param<Tensor<2>>,
    pub proj_bias: Param<Tensor<1>>,
}

impl AttentionBlock {
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let identity = x.clone();
        let [b, c, t, h, w] = x.dims();
        let (frames, tokens) = (b * t, h * w);
        let x = self
            .norm
            .forward(x)
            .permute([0, 2, 3, 4, 1])
            .reshape([frames * tokens, c]);
        let qkv = x.matmul(self.to_qkv_weight.val()) + self.to_qkv_bias.val().unsqueeze::<2>();
        let qkv = qkv.reshape([frames, 1, tokens, 3 * c]);
        let q = qkv.clone().narrow(3, 0, c);
        let k = qkv.clone().narrow(3, c, c);
        let v = qkv.narrow(3, 2 * c, c);
        let y = lynx_core::nn::attention(q, k, v, None, None).reshape([frames * tokens, c]);
        let y = y.matmul(self.proj_weight.val()) + self.proj_bias.val().unsqueeze::<2>();
        y.reshape([b, t, h, w, c]).permute([0, 4, 1, 2, 3]) + identity
    }
}
