//! `WanResidualBlock` and `WanMidBlock`.

use burn::module::Module;
use burn::tensor::Tensor;
use lynx_store::Loader;

use crate::attention::AttentionBlock;
use crate::conv::{CausalConv3d, FeatCache};
use crate::norm::ChannelRmsNorm;

/// `x + conv2(silu(norm2(conv1(silu(norm1(x))))))`, with a 1×1×1 `conv_shortcut` on the
/// skip path when the widths differ. Dropout is the identity at inference.
///
/// # Shapes
/// - input `[B, in, T, H, W]` → `[B, out, T, H, W]`
#[derive(Module, Debug)]
pub struct ResidualBlock {
    norm1: ChannelRmsNorm,
    conv1: CausalConv3d,
    norm2: ChannelRmsNorm,
    conv2: CausalConv3d,
    conv_shortcut: Option<CausalConv3d>,
}

impl ResidualBlock {
    /// `WanResidualBlock(c_in, c_out)`: `norm1`, `conv1`, `norm2`, `conv2` and, when the
    /// widths differ, `conv_shortcut`.
    pub fn load(w: &Loader, c_in: usize, c_out: usize) -> Self {
        let conv3 =
            |name: &str, i| CausalConv3d::load(&w.sub(name), i, c_out, [3; 3], [1; 3], [1, 1]);
        Self {
            norm1: ChannelRmsNorm::load(&w.sub("norm1"), c_in, false),
            conv1: conv3("conv1", c_in),
            norm2: ChannelRmsNorm::load(&w.sub("norm2"), c_out, false),
            conv2: conv3("conv2", c_out),
            conv_shortcut: (c_in != c_out).then(|| {
                CausalConv3d::load(&w.sub("conv_shortcut"), c_in, c_out, [1; 3], [1; 3], [0, 0])
            }),
        }
    }

    /// Runs the next chunk; the two 3×3×3 convolutions take their past from `cache`.
    ///
    /// # Shapes
    /// - input `[B, in, T, H, W]` → `[B, out, T, H, W]`
    pub fn forward(&self, x: Tensor<5>, cache: &mut FeatCache) -> Tensor<5> {
        let h = match &self.conv_shortcut {
            Some(conv) => conv.forward(x.clone()),
            None => x.clone(),
        };
        let x = self.norm1.forward_silu(x);
        let x = self.conv1.forward_cached(x, cache.slot());
        let x = self.norm2.forward_silu(x);
        let x = self.conv2.forward_cached(x, cache.slot());
        x + h
    }
}

/// `resnets[0]`, then for each attention block: attention, `resnets[i + 1]`.
///
/// # Shapes
/// - input `[B, C, T, H, W]` → same shape
#[derive(Module, Debug)]
pub struct MidBlock {
    resnets: Vec<ResidualBlock>,
    attentions: Vec<AttentionBlock>,
}

impl MidBlock {
    /// `WanMidBlock(dim)`: `resnets.{0,1}`, `attentions.0`.
    pub fn load(w: &Loader, dim: usize) -> Self {
        Self {
            resnets: (0..2)
                .map(|i| ResidualBlock::load(&w.sub("resnets").sub(i), dim, dim))
                .collect(),
            attentions: vec![AttentionBlock::load(&w.sub("attentions").sub(0), dim)],
        }
    }

    /// Runs the next chunk.
    ///
    /// # Shapes
    /// - input `[B, C, T, H, W]` → same shape
    pub fn forward(&self, x: Tensor<5>, cache: &mut FeatCache) -> Tensor<5> {
        let mut x = self.resnets[0].forward(x, cache);
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            x = attn.forward(x);
            x = resnet.forward(x, cache);
        }
        x
    }
}
