//! Key mapping: builds the UMT5 encoder from a transformers `UMT5EncoderModel`
//! checkpoint (`text_encoder/model*.safetensors`), one tensor at a time.
//!
//! | module | keys |
//! |---|---|
//! | embedding | `shared.weight` (or its tied copy `encoder.embed_tokens.weight`) |
//! | block N | `encoder.block.N.layer.0.{layer_norm, SelfAttention.{q,k,v,o,relative_attention_bias}}`, `encoder.block.N.layer.1.{layer_norm, DenseReluDense.{wi_0,wi_1,wo}}` |
//! | final norm | `encoder.final_layer_norm.weight` |
//!
//! A full encoder–decoder checkpoint also loads: `decoder.*` and `lm_head.*` are ignored.

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::DType;
use lynx_core::Loader;
use lynx_core::nn::{RmsNorm, load_linear};

use crate::attention::Umt5Attention;
use crate::config::Umt5Config;
use crate::encoder::{Umt5Block, Umt5Encoder, Umt5LayerFf, Umt5LayerSelfAttention};
use crate::ffn::{DenseGatedActDense, wo_dtype};

/// Loads the encoder in the loader's dtype (norm weights in f32; `wo` in f32 for f16
/// models). Call `loader.finish()` afterwards to learn about missing or unused keys.
pub fn load_encoder(cfg: &Umt5Config, w: &Loader) -> Umt5Encoder {
    // transformers ties `encoder.embed_tokens` to `shared`; files hold one or both.
    let shared_key = if w.has("shared.weight") || !w.has("encoder.embed_tokens.weight") {
        w.ignore("encoder.embed_tokens.weight");
        "shared"
    } else {
        "encoder.embed_tokens"
    };
    w.ignore("decoder.");
    w.ignore("lm_head.");
    let shared = w
        .sub(shared_key)
        .param("weight", [cfg.vocab_size, cfg.d_model]);
    let enc = w.sub("encoder");
    let block = (0..cfg.num_layers)
        .map(|i| load_block(cfg, &enc.sub("block").sub(i)))
        .collect();
    Umt5Encoder {
        shared,
        block,
        final_layer_norm: RmsNorm::load(
            &enc.sub("final_layer_norm"),
            cfg.d_model,
            cfg.layer_norm_epsilon,
        ),
        relative_attention_num_buckets: cfg.relative_attention_num_buckets,
        relative_attention_max_distance: cfg.relative_attention_max_distance,
    }
}

fn load_block(cfg: &Umt5Config, w: &Loader) -> Umt5Block {
    let l0 = w.sub("layer").sub(0);
    let l1 = w.sub("layer").sub(1);
    Umt5Block {
        attention: Umt5LayerSelfAttention {
            layer_norm: RmsNorm::load(&l0.sub("layer_norm"), cfg.d_model, cfg.layer_norm_epsilon),
            self_attention: load_attention(cfg, &l0.sub("SelfAttention")),
        },
        ff: Umt5LayerFf {
            layer_norm: RmsNorm::load(&l1.sub("layer_norm"), cfg.d_model, cfg.layer_norm_epsilon),
            dense_relu_dense: load_ffn(cfg, &l1.sub("DenseReluDense")),
        },
    }
}

fn load_attention(cfg: &Umt5Config, w: &Loader) -> Umt5Attention {
    let (d, inner) = (cfg.d_model, cfg.inner_dim());
    Umt5Attention {
        q: load_linear(&w.sub("q"), d, inner, false),
        k: load_linear(&w.sub("k"), d, inner, false),
        v: load_linear(&w.sub("v"), d, inner, false),
        o: load_linear(&w.sub("o"), inner, d, false),
        relative_attention_bias: w.sub("relative_attention_bias").param(
            "weight",
            [cfg.relative_attention_num_buckets, cfg.num_heads],
        ),
        num_heads: cfg.num_heads,
        d_kv: cfg.d_kv,
    }
}

fn load_ffn(cfg: &Umt5Config, w: &Loader) -> DenseGatedActDense {
    let (d, ff) = (cfg.d_model, cfg.d_ff);
    let wo = if wo_dtype(w.dtype()) == DType::F32 && w.dtype() != DType::F32 {
        // Kept in f32 like transformers' `_keep_in_fp32_modules` does for f16.
        let weight = w.sub("wo").tensor_f32::<2>("weight", [d, ff]).transpose();
        Linear {
            weight: Param::from_tensor(weight),
            bias: None,
        }
    } else {
        load_linear(&w.sub("wo"), ff, d, false)
    };
    DenseGatedActDense {
        wi_0: load_linear(&w.sub("wi_0"), d, ff, false),
        wi_1: load_linear(&w.sub("wi_1"), d, ff, false),
        wo,
        activation: cfg.activation,
    }
}
