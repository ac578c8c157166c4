//! `WanEncoder3d`: video → `2·z_dim` channels at 1/8 size, 1 + (F − 1)/4 frames.

use burn::module::Module;
use burn::tensor::Tensor;
use lynx_store::Loader;

use crate::attention::AttentionBlock;
use crate::config::VaeConfig;
use crate::conv::{CausalConv3d, FeatCache};
use crate::norm::ChannelRmsNorm;
use crate::resample::Resample;
use crate::resnet::{MidBlock, ResidualBlock};

/// One entry of the encoder's flat `down_blocks` list.
// Built once per model; burn modules cannot box their variants.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum DownBlock {
    /// `WanResidualBlock`.
    Residual(ResidualBlock),
    /// `WanAttentionBlock` (where `attn_scales` asks for one).
    Attention(AttentionBlock),
    /// `WanResample` at the end of a stage.
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
    conv_in: CausalConv3d,
    down_blocks: Vec<DownBlock>,
    mid_block: MidBlock,
    norm_out: ChannelRmsNorm,
    conv_out: CausalConv3d,
}

impl Encoder3d {
    /// `WanEncoder3d(base_dim, 2·z_dim, dim_mult, num_res_blocks, attn_scales,
    /// temperal_downsample)`.
    pub fn load(w: &Loader, cfg: &VaeConfig) -> Self {
        let dims = cfg.dims();
        let conv_in = CausalConv3d::load(&w.sub("conv_in"), 3, dims[0], [3; 3], [1; 3], [1, 1]);
        let mut blocks = Vec::new();
        let mut scale = 1.0f64;
        let stages = cfg.dim_mult.len();
        for i in 0..stages {
            let mut c_in = dims[i];
            let c_out = dims[i + 1];
            for _ in 0..cfg.num_res_blocks {
                let sub = w.sub("down_blocks").sub(blocks.len());
                blocks.push(DownBlock::Residual(ResidualBlock::load(&sub, c_in, c_out)));
                if cfg.attn_scales.contains(&scale) {
                    let sub = w.sub("down_blocks").sub(blocks.len());
                    blocks.push(DownBlock::Attention(AttentionBlock::load(&sub, c_out)));
                }
                c_in = c_out;
            }
            if i + 1 != stages {
                let sub = w.sub("down_blocks").sub(blocks.len());
                let temporal = cfg.temperal_downsample[i];
                blocks.push(DownBlock::Resample(Resample::load(
                    &sub, c_out, false, temporal,
                )));
                scale /= 2.0;
            }
        }
        let top = dims[stages];
        Self {
            conv_in,
            down_blocks: blocks,
            mid_block: MidBlock::load(&w.sub("mid_block"), top),
            norm_out: ChannelRmsNorm::load(&w.sub("norm_out"), top, false),
            conv_out: CausalConv3d::load(
                &w.sub("conv_out"),
                top,
                2 * cfg.z_dim,
                [3; 3],
                [1; 3],
                [1, 1],
            ),
        }
    }

    /// Encodes the next chunk of frames, carrying causal context in `cache`.
    ///
    /// # Shapes
    /// - input `[B, 3, T, H, W]` → `[B, 2·z_dim, 1, H/8, W/8]` (Wan2.1's factors)
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
        let x = self.norm_out.forward_silu(x);
        self.conv_out.forward_cached(x, cache.slot())
    }
}
