//! `WanDecoder3d`: latents → video, one latent frame at a time.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;

use crate::conv::{CausalConv3d, FeatCache};
use crate::norm::ChannelRmsNorm;
use crate::resample::Resample;
use crate::resnet::{MidBlock, ResidualBlock};

/// `num_res_blocks + 1` residual blocks, then an optional upsampler (`upsamplers.0`).
///
/// # Shapes
/// - input `[B, in, T, H, W]` → `[B, out, T, H, W]`, or after the upsampler
///   `[B, out/2, T·u, 2H, 2W]`
#[derive(Module, Debug)]
pub struct UpBlock {
    pub resnets: Vec<ResidualBlock>,
    pub upsamplers: Vec<Resample>,
}

impl UpBlock {
    pub fn forward(&self, mut x: Tensor<5>, cache: &mut FeatCache) -> Tensor<5> {
        for resnet in &self.resnets {
            x = resnet.forward(x, cache);
        }
        for up in &self.upsamplers {
            x = up.forward(x, cache);
        }
        x
    }
}

/// `conv_in` → `mid_block` → `up_blocks` → `norm_out`, SiLU → `conv_out`.
///
/// # Shapes
/// - input chunk `[B, z_dim, 1, h, w]` (one latent frame)
/// - output `[B, 3, 1, 8h, 8w]` for the first chunk, `[B, 3, 4, 8h, 8w]` after (Wan2.1)
#[derive(Module, Debug)]
pub struct Decoder3d {
    pub conv_in: CausalConv3d,
    pub mid_block: MidBlock,
    pub up_blocks: Vec<UpBlock>,
    pub norm_out: ChannelRmsNorm,
    pub conv_out: CausalConv3d,
}

impl Decoder3d {
    /// Decodes the next latent frame(s), carrying causal context in `cache`.
    pub fn forward(&self, x: Tensor<5>, cache: &mut FeatCache) -> Tensor<5> {
        cache.begin_chunk();
        let x = self.conv_in.forward_cached(x, cache.slot());
        let mut x = self.mid_block.forward(x, cache);
        for block in &self.up_blocks {
            x = block.forward(x, cache);
        }
        let x = silu(self.norm_out.forward(x));
        self.conv_out.forward_cached(x, cache.slot())
    }
}
