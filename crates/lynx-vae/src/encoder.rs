//! `WanEncoder3d`: video → `2·z_dim` channels at 1/8 size, 1 + (F − 1)/4 frames.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;

use crate::attention::AttentionBlock;
use crate::conv::{CausalConv3d, FeatCache};
use crate::norm::ChannelRmsNorm;
use crate::resample::Resample;
use crate::resnet::{MidBlock, ResidualBlock};

/// One entry of the encoder's flat `down_blocks` list.
// Built once per model; burn modules cannot box their variants.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum DownBlock {
    Residual(ResidualBlock),
    Attention(AttentionBlock),
    Resample(Resample),
}

/// `conv_in` → `down_blocks` (per stage: residual blocks, optional attention, a
/// resample except after the last stage) → `mid_block` → `norm_out`, SiLU → `conv_out`.
///
/// # Shapes
/// - input chunk `[B, 3, T, H, W]` (T = 1 for the first chunk, then 4)
/// - output `[B, 2·z_dim, 1, H/8, W/8]` per chunk (Wan2.1's factors)
#[derive(Module, Debug)]
pub struct Encoder3d {
    pub conv_in: CausalConv3d,
    pub down_blocks: Vec<DownBlock>,
    pub mid_block: MidBlock,
    pub norm_out: ChannelRmsNorm,
    pub conv_out: CausalConv3d,
}

impl Encoder3d {
    /// Encodes the next chunk of frames, carrying causal context in `cache`.
    pub fn forward(&self, x: Tensor<5>, cache: &mut FeatCache) -> Tensor<5> {
        cache.begin_chunk();
        let mut x = self.conv_in.forward_cached(x, cache.slot());
        for block in &self.down_blocks {
            x = match block {
                DownBlock::Residual(b) => b.forward(x, cache),
                DownBlock::Attention(a) => a.forward(x),
                DownBlock::Resample(r) => r.forward(x, cache),
            };
        }
        let x = self.mid_block.forward(x, cache);
        let x = silu(self.norm_out.forward(x));
        self.conv_out.forward_cached(x, cache.slot())
    }
}
