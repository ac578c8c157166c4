//! Key mapping: builds every module from the diffusers `AutoencoderKLWan` state dict.
//!
//! Keys follow the PyTorch attribute names (`encoder.down_blocks.3.time_conv.weight`,
//! `decoder.up_blocks.0.upsamplers.0.resample.1.weight`, …). Shapes are checked against
//! the config; [`lynx_core::Loader::finish`] then reports every missing, unused or
//! mis-shaped tensor at once.

use burn::module::Param;
use lynx_core::Loader;

use crate::attention::AttentionBlock;
use crate::config::VaeConfig;
use crate::conv::CausalConv3d;
use crate::decoder::{Decoder3d, UpBlock};
use crate::encoder::{DownBlock, Encoder3d};
use crate::norm::ChannelRmsNorm;
use crate::resample::{Resample, subpixel_kernel};
use crate::resnet::{MidBlock, ResidualBlock};

impl CausalConv3d {
    /// `WanCausalConv3d(c_in, c_out, k, stride, padding)`: `weight` `[out, in, kt, kh, kw]`.
    pub(crate) fn load(
        w: &Loader,
        c_in: usize,
        c_out: usize,
        k: [usize; 3],
        stride: [usize; 3],
        padding: [usize; 2],
    ) -> Self {
        Self {
            weight: w.param("weight", [c_out, c_in, k[0], k[1], k[2]]),
            bias: w.param("bias", [c_out]),
            stride,
            padding,
        }
    }

    /// A `torch.nn.Conv2d` applied frame by frame: `weight` `[out, in, kh, kw]` becomes
    /// `[out, in, 1, kh, kw]`.
    pub(crate) fn load_2d(
        w: &Loader,
        c_in: usize,
        c_out: usize,
        stride: usize,
        padding: usize,
    ) -> Self {
        let weight = w
            .tensor::<4>("weight", [c_out, c_in, 3, 3])
            .unsqueeze_dim::<5>(2);
        Self {
            weight: Param::from_tensor(weight),
            bias: w.param("bias", [c_out]),
            stride: [1, stride, stride],
            padding: [padding, padding],
        }
    }
}

impl CausalConv3d {
    /// The `torch.nn.Conv2d(c_in, c_out, 3, padding=1)` after a nearest ×2 upsampling, in
    /// the sub-pixel form of [`subpixel_kernel`].
    pub(crate) fn load_subpixel(w: &Loader, c_in: usize, c_out: usize) -> Self {
        let weight = w.tensor::<4>("weight", [c_out, c_in, 3, 3]);
        let bias = w.tensor::<1>("bias", [c_out]);
        let (weight, bias) = if weight.dims() == [c_out, c_in, 3, 3] && bias.dims() == [c_out] {
            subpixel_kernel(weight, bias)
        } else {
            // A placeholder after a load error, which `Loader::finish` reports.
            (weight.unsqueeze_dim(2), bias)
        };
        Self {
            weight: Param::from_tensor(weight),
            bias: Param::from_tensor(bias),
            stride: [1; 3],
            padding: [1, 1],
        }
    }
}

impl ChannelRmsNorm {
    /// `WanRMS_norm(dim, images)`: `gamma` `[C, 1, 1, 1]` (`images=False`) or `[C, 1, 1]`,
    /// optional `bias` of the same shape; kept in f32.
    pub(crate) fn load(w: &Loader, dim: usize, images: bool) -> Self {
        let (gamma, bias) = if images {
            let b = w
                .has("bias")
                .then(|| w.tensor_f32::<3>("bias", [dim, 1, 1]).flatten(0, 2));
            (w.tensor_f32::<3>("gamma", [dim, 1, 1]).flatten(0, 2), b)
        } else {
            let b = w
                .has("bias")
                .then(|| w.tensor_f32::<4>("bias", [dim, 1, 1, 1]).flatten(0, 3));
            (w.tensor_f32::<4>("gamma", [dim, 1, 1, 1]).flatten(0, 3), b)
        };
        Self {
            gamma: Param::from_tensor(gamma),
            bias: bias.map(Param::from_tensor),
            scale: (dim as f64).sqrt(),
        }
    }
}

impl ResidualBlock {
    pub(crate) fn load(w: &Loader, c_in: usize, c_out: usize) -> Self {
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
}

impl AttentionBlock {
    pub(crate) fn load(w: &Loader, dim: usize) -> Self {
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
}

impl MidBlock {
    pub(crate) fn load(w: &Loader, dim: usize) -> Self {
        Self {
            resnets: (0..2)
                .map(|i| ResidualBlock::load(&w.sub("resnets").sub(i), dim, dim))
                .collect(),
            attentions: vec![AttentionBlock::load(&w.sub("attentions").sub(0), dim)],
        }
    }
}

impl Resample {
    /// `mode`: `upsample2d`, `upsample3d`, `downsample2d` or `downsample3d`.
    pub(crate) fn load(w: &Loader, dim: usize, upsample: bool, temporal: bool) -> Self {
        let conv = w.sub("resample").sub(1);
        let (resample, time_conv) = if upsample {
            let time = temporal.then(|| {
                CausalConv3d::load(&w.sub("time_conv"), dim, 2 * dim, [3, 1, 1], [1; 3], [0, 0])
            });
            (CausalConv3d::load_subpixel(&conv, dim, dim / 2), time)
        } else {
            let time = temporal.then(|| {
                CausalConv3d::load(&w.sub("time_conv"), dim, dim, [3, 1, 1], [2, 1, 1], [0, 0])
            });
            (CausalConv3d::load_2d(&conv, dim, dim, 2, 0), time)
        };
        Self {
            resample,
            time_conv,
            upsample,
        }
    }
}

impl Encoder3d {
    /// `WanEncoder3d(base_dim, 2·z_dim, dim_mult, num_res_blocks, attn_scales,
    /// temperal_downsample)`.
    pub(crate) fn load(w: &Loader, cfg: &VaeConfig) -> Self {
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
}

impl Decoder3d {
    /// `WanDecoder3d(base_dim, z_dim, dim_mult, num_res_blocks, attn_scales,
    /// temperal_downsample reversed)`.
    pub(crate) fn load(w: &Loader, cfg: &VaeConfig) -> Self {
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
}

/// The encoder, decoder and the two 1×1×1 latent convolutions.
pub(crate) struct Parts {
    pub encoder: Encoder3d,
    pub decoder: Decoder3d,
    pub quant_conv: CausalConv3d,
    pub post_quant_conv: CausalConv3d,
}

pub(crate) fn load_parts(w: &Loader, cfg: &VaeConfig) -> Parts {
    let z = cfg.z_dim;
    Parts {
        encoder: Encoder3d::load(&w.sub("encoder"), cfg),
        decoder: Decoder3d::load(&w.sub("decoder"), cfg),
        quant_conv: CausalConv3d::load(&w.sub("quant_conv"), 2 * z, 2 * z, [1; 3], [1; 3], [0, 0]),
        post_quant_conv: CausalConv3d::load(
            &w.sub("post_quant_conv"),
            z,
            z,
            [1; 3],
            [1; 3],
            [0, 0],
        ),
    }
}
