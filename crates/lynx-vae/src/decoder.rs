//! `WanDecoder3d`: latents → video, one latent frame at a time.

use burn::module::Module;
use burn::tensor::Tensor;
use lynx_store::Loader;

use crate::config::VaeConfig;
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
    resnets: Vec<ResidualBlock>,
    upsamplers: Vec<Resample>,
}

impl UpBlock {
    /// Runs the next chunk.
    ///
    /// # Shapes
    /// See the type's docs.
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
    conv_in: CausalConv3d,
    mid_block: MidBlock,
    up_blocks: Vec<UpBlock>,
    norm_out: ChannelRmsNorm,
    conv_out: CausalConv3d,
}

impl Decoder3d {
    /// `WanDecoder3d(base_dim, z_dim, dim_mult, num_res_blocks, attn_scales,
    /// temperal_downsample reversed)`.
    pub fn load(w: &Loader, cfg: &VaeConfig) -> Self {
        let stages = cfg.dim_mult.len();
        // Widths base·[dim_mult[-1], dim_mult reversed…].
        let dims: Vec<usize> = std::iter::once(cfg.dim_mult[stages - 1])
            .chain(cfg.dim_mult.iter().rev().copied())
            .map(|m| cfg.base_dim * m)
            .collect();
        let temporal_up: Vec<bool> = cfg.temperal_downsample.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(stages);
        for i in 0..stages {
            let sub = w.sub("up_blocks").sub(i);
            // After an upsampler the width is halved.
            let mut c_in = if i > 0 { dims[i] / 2 } else { dims[i] };
            let c_out = dims[i + 1];
            let resnets = (0..=cfg.num_res_blocks)
                .map(|j| {
                    let r = ResidualBlock::load(&sub.sub("resnets").sub(j), c_in, c_out);
                    c_in = c_out;
                    r
                })
                .collect();
            let upsamplers = if i + 1 != stages {
                vec![Resample::load(
                    &sub.sub("upsamplers").sub(0),
                    c_out,
                    true,
                    temporal_up[i],
                )]
            } else {
                Vec::new()
            };
            up_blocks.push(UpBlock {
                resnets,
                upsamplers,
            });
        }
        let last = dims[stages];
        Self {
            conv_in: CausalConv3d::load(
                &w.sub("conv_in"),
                cfg.z_dim,
                dims[0],
                [3; 3],
                [1; 3],
                [1, 1],
            ),
            mid_block: MidBlock::load(&w.sub("mid_block"), dims[0]),
            up_blocks,
            norm_out: ChannelRmsNorm::load(&w.sub("norm_out"), last, false),
            conv_out: CausalConv3d::load(&w.sub("conv_out"), last, 3, [3; 3], [1; 3], [1, 1]),
        }
    }

    /// Decodes the next latent frame(s), carrying causal context in `cache`.
    ///
    /// # Shapes
    /// - input `[B, z_dim, 1, h, w]` → `[B, 3, 1 or 4, 8h, 8w]` (Wan2.1's factors)
    pub fn forward(&self, x: Tensor<5>, cache: &mut FeatCache) -> Tensor<5> {
        cache.begin_chunk();
        let x = self.conv_in.forward_cached(x, cache.slot());
        let mut x = self.mid_block.forward(x, cache);
        for block in &self.up_blocks {
            x = block.forward(x, cache);
        }
        let x = self.norm_out.forward_silu(x);
        self.conv_out.forward_cached(x, cache.slot())
    }
}
