//! `WanAttentionBlock`: single-head self-attention over the pixels of each frame.

use burn::module::{Module, Param};
use burn::tensor::Tensor;
use lynx_store::Loader;

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
    norm: ChannelRmsNorm,
    to_qkv_weight: Param<Tensor<2>>,
    to_qkv_bias: Param<Tensor<1>>,
    proj_weight: Param<Tensor<2>>,
    proj_bias: Param<Tensor<1>>,
}

impl AttentionBlock {
    /// `WanAttentionBlock(dim)`: `norm` (image form), `to_qkv` and `proj` (1×1 convs).
    pub fn load(w: &Loader, dim: usize) -> Self {
        let matrix = |name: &str, rows| {
            let t = w
                .sub(name)
                .tensor::<4>("weight", [rows, dim, 1, 1])
                .flatten::<2>(1, 3);
            Param::from_tensor(t.transpose())
        };
        Self {
            norm: ChannelRmsNorm::load(&w.sub("norm"), dim, true),
            to_qkv_weight: matrix("to_qkv", 3 * dim),
            to_qkv_bias: w.sub("to_qkv").param("bias", [3 * dim]),
            proj_weight: matrix("proj", dim),
            proj_bias: w.sub("proj").param("bias", [dim]),
        }
    }

    /// Attention over the pixels of each frame, residual.
    ///
    /// # Shapes
    /// - input `[B, C, T, H, W]` → same shape
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
