//! Key mapping from diffusers' `WanTransformer3DModel` state dict to the modules.
//!
//! | key | module |
//! |---|---|
//! | `patch_embedding.{weight [dim, C, pt, ph, pw], bias}` | [`PatchEmbedding`] (flattened to a linear) |
//! | `condition_embedder.time_embedder.linear_{1,2}.*` | [`TimestepEmbedding`] (f32) |
//! | `condition_embedder.time_proj.*` | `time_proj` (dim → 6·dim) |
//! | `condition_embedder.text_embedder.linear_{1,2}.*` | [`TextProjection`] |
//! | `blocks.N.attn{1,2}.{to_q,to_k,to_v,to_out.0}.*`, `…norm_{q,k}.weight` | [`WanAttention`] |
//! | `blocks.N.norm2.{weight,bias}` | affine norm before cross-attention |
//! | `blocks.N.ffn.net.0.proj.*`, `blocks.N.ffn.net.2.*` | [`FeedForward`] |
//! | `blocks.N.scale_shift_table [1, 6, dim]`, `scale_shift_table [1, 2, dim]` | f32 |
//! | `proj_out.*` | head projection (dim → C·pt·ph·pw) |

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::Tensor;
use lynx_core::Loader;
use lynx_core::nn::{LayerNorm, RmsNorm, load_linear};

use crate::attention::WanAttention;
use crate::block::{FeedForward, WanBlock};
use crate::config::WanConfig;
use crate::embeddings::{ConditionEmbedder, PatchEmbedding, TextProjection, TimestepEmbedding};
use crate::model::WanTransformer;
use crate::rope::WanRope;

/// Builds the whole model; problems are recorded in `w` for [`Loader::finish`].
pub(crate) fn load_transformer(config: WanConfig, w: &Loader) -> WanTransformer {
    let dim = config.inner_dim();
    let eps = config.eps;
    let out = config.out_channels() * config.patch_volume();
    WanTransformer {
        patch_embedding: load_patch_embedding(&config, &w.sub("patch_embedding")),
        condition_embedder: load_condition_embedder(&config, &w.sub("condition_embedder")),
        blocks: (0..config.num_layers)
            .map(|i| load_block(&config, &w.sub("blocks").sub(i)))
            .collect(),
        norm_out: LayerNorm::plain(dim, eps, w.device()),
        proj_out: load_linear(&w.sub("proj_out"), dim, out, true),
        scale_shift_table: w.param_f32("scale_shift_table", [1, 2, dim]),
        rope: WanRope::new(config.attention_head_dim, config.rope_max_seq_len),
        dtype: w.dtype(),
        config,
    }
}

fn load_patch_embedding(cfg: &WanConfig, w: &Loader) -> PatchEmbedding {
    let dim = cfg.inner_dim();
    let [pt, ph, pw] = cfg.patch_size;
    let shape = [dim, cfg.in_channels, pt, ph, pw];
    let volume = cfg.in_channels * cfg.patch_volume();
    let weight = w.tensor::<5>("weight", shape);
    // A missing or mis-shaped weight comes back as a placeholder (reported by `finish`).
    let weight = if weight.dims() == shape {
        weight.reshape([dim, volume])
    } else {
        Tensor::zeros([dim, volume], (w.device(), w.dtype()))
    };
    PatchEmbedding {
        proj: Linear {
            weight: Param::from_tensor(weight.transpose()),
            bias: Some(w.param("bias", [dim])),
        },
        patch_size: cfg.patch_size,
    }
}

/// A `torch.nn.Linear` kept in f32 whatever the model dtype.
fn load_linear_f32(w: &Loader, d_in: usize, d_out: usize) -> Linear {
    Linear {
        weight: Param::from_tensor(w.tensor_f32::<2>("weight", [d_out, d_in]).transpose()),
        bias: Some(w.param_f32("bias", [d_out])),
    }
}

fn load_condition_embedder(cfg: &WanConfig, w: &Loader) -> ConditionEmbedder {
    let dim = cfg.inner_dim();
    let time = w.sub("time_embedder");
    let text = w.sub("text_embedder");
    ConditionEmbedder {
        time_embedder: TimestepEmbedding {
            linear_1: load_linear_f32(&time.sub("linear_1"), cfg.freq_dim, dim),
            linear_2: load_linear_f32(&time.sub("linear_2"), dim, dim),
        },
        time_proj: load_linear(&w.sub("time_proj"), dim, 6 * dim, true),
        text_embedder: TextProjection {
            linear_1: load_linear(&text.sub("linear_1"), cfg.text_dim, dim, true),
            linear_2: load_linear(&text.sub("linear_2"), dim, dim, true),
        },
        freq_dim: cfg.freq_dim,
        dim,
    }
}

fn load_attention(cfg: &WanConfig, w: &Loader) -> WanAttention {
    let dim = cfg.inner_dim();
    WanAttention {
        to_q: load_linear(&w.sub("to_q"), dim, dim, true),
        to_k: load_linear(&w.sub("to_k"), dim, dim, true),
        to_v: load_linear(&w.sub("to_v"), dim, dim, true),
        to_out: load_linear(&w.sub("to_out").sub(0), dim, dim, true),
        norm_q: RmsNorm::load(&w.sub("norm_q"), dim, cfg.eps),
        norm_k: RmsNorm::load(&w.sub("norm_k"), dim, cfg.eps),
        heads: cfg.num_attention_heads,
    }
}

fn load_block(cfg: &WanConfig, w: &Loader) -> WanBlock {
    let dim = cfg.inner_dim();
    let device = w.device();
    let ffn = w.sub("ffn").sub("net");
    WanBlock {
        norm1: LayerNorm::plain(dim, cfg.eps, device),
        attn1: load_attention(cfg, &w.sub("attn1")),
        attn2: load_attention(cfg, &w.sub("attn2")),
        norm2: cfg
            .cross_attn_norm
            .then(|| LayerNorm::load(&w.sub("norm2"), dim, cfg.eps)),
        ffn: FeedForward {
            proj: load_linear(&ffn.sub(0).sub("proj"), dim, cfg.ffn_dim, true),
            out: load_linear(&ffn.sub(2), cfg.ffn_dim, dim, true),
        },
        norm3: LayerNorm::plain(dim, cfg.eps, device),
        scale_shift_table: w.param_f32("scale_shift_table", [1, 6, dim]),
    }
}
