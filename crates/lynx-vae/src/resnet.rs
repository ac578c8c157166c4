//! `WanResidualBlock` and `WanMidBlock`.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;

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
    pub norm1: ChannelRmsNorm,
    pub conv1: CausalConv3d,
    pub norm2: ChannelRmsNorm,
    pub conv2: CausalConv3d,
    pub conv_shortcut: Option<CausalConv3d>,
}

impl ResidualBlock {
    /// Runs the next chunk; the two 3×3×3 convolutions take their past from `cache`.
    pub fn forward(&self, x: Tensor<5>, cache: &mut FeatCache) -> Tensor<5> {
        let h = match &self.conv_shortcut {
            Some(conv) => conv.forward(x.clone()),
            None => x.clone(),
        };
        let x = silu(self.norm1.forward(x));
        let x = self.conv1.forward_cached(x, cache.slot());
        let x = silu(self.norm2.forward(x));
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
    pub resnets: Vec<ResidualBlock>,
    pub attentions: Vec<AttentionBlock>,
}

impl MidBlock {
    pub fn forward(&self, x: Tensor<5>, cache: &mut FeatCache) -> Tensor<5> {
        let mut x = self.resnets[0].forward(x, cache);
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            x = attn.forward(x);
            x = resnet.forward(x, cache);
        }
        x
    }
}
