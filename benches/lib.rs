//! Models at the widths of `BENCH.md` with synthetic random weights (see
//! `lynx_store::Checkpoint::synthetic`), for `benches/workloads.rs`.
//!
//! `LYNX_BENCH_DEVICE` picks the device (`cpu` by default).

use burn::tensor::{DType, Device, Distribution, Tensor};
use lynx_pipeline::lynx_core::{Result, config::parse_json};
use lynx_pipeline::lynx_dit::{BlockExtras, ExtraKv, WanConfig, WanTransformer};
use lynx_pipeline::lynx_store::Checkpoint;
use lynx_pipeline::lynx_text::{Umt5Config, Umt5Encoder};
use lynx_pipeline::lynx_vae::{VaeConfig, WanVae};

/// Standard deviation of the synthetic weights.
const STD: f64 = 0.02;

/// The bench device from `LYNX_BENCH_DEVICE` (default `cpu`).
pub fn device() -> Device {
    let name = std::env::var("LYNX_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into());
    lynx_pipeline::parse_device(&name).expect("LYNX_BENCH_DEVICE")
}

/// Normal noise of `shape` on `device`.
pub fn noise<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

/// Wan2.1-1.3B widths (12 × 128 heads, ffn 8960, text 4096, freq 256) with 2 layers.
pub fn dit_1_3b_2_layers(device: &Device) -> Result<WanTransformer> {
    let config: WanConfig = parse_json(
        r#"{"_class_name": "WanTransformer3DModel", "patch_size": [1, 2, 2],
            "num_attention_heads": 12, "attention_head_dim": 128, "in_channels": 16,
            "out_channels": 16, "text_dim": 4096, "freq_dim": 256, "ffn_dim": 8960,
            "num_layers": 2, "cross_attn_norm": true, "qk_norm": "rms_norm_across_heads",
            "eps": 1e-6, "image_dim": null, "added_kv_proj_dim": null,
            "rope_max_seq_len": 1024}"#,
        "bench: Wan2.1-1.3B widths",
    )?;
    Checkpoint::synthetic(STD).build(device, DType::F32, |w| WanTransformer::load(w, config))
}

/// Per-block adapter inputs as Lynx builds them: 16 ID tokens + 2 registers for
/// cross-attention, and Ref features of `ref_tokens` tokens for self-attention.
pub fn lynx_extras(dit: &WanTransformer, ref_tokens: usize, device: &Device) -> Vec<BlockExtras> {
    let dim = dit.dim();
    let kv = |m: usize| ExtraKv::new(noise([1, m, dim], device), noise([1, m, dim], device), 1.0);
    (0..dit.num_layers())
        .map(|_| BlockExtras {
            self_attn: Some(kv(ref_tokens)),
            cross_attn: Some(kv(16 + 2)),
        })
        .collect()
}

/// The Wan2.1 VAE at its real config (base_dim 96, z_dim 16).
pub fn wan_vae(device: &Device) -> Result<WanVae> {
    let mean = vec![0.0f64; 16];
    let std = vec![1.0f64; 16];
    let config: VaeConfig = parse_json(
        &format!(
            r#"{{"_class_name": "AutoencoderKLWan", "base_dim": 96, "z_dim": 16,
                "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [],
                "temperal_downsample": [false, true, true], "dropout": 0.0,
                "latents_mean": {mean:?}, "latents_std": {std:?}}}"#
        ),
        "bench: Wan2.1 VAE",
    )?;
    Checkpoint::synthetic(STD).build(device, DType::F32, |w| WanVae::load(w, config))
}

/// UMT5 at XXL widths (d_model 4096, d_ff 10240, 64 heads × 64) with 2 layers. The
/// vocabulary is cut to 32k rows: only the 512 looked-up rows matter for timing.
pub fn umt5_xxl_2_layers(device: &Device) -> Result<Umt5Encoder> {
    let config = Umt5Config::parse(
        r#"{"d_model": 4096, "d_ff": 10240, "d_kv": 64, "num_heads": 64, "num_layers": 2,
            "vocab_size": 32000, "relative_attention_num_buckets": 32,
            "relative_attention_max_distance": 128, "feed_forward_proj": "gated-gelu",
            "layer_norm_epsilon": 1e-6, "dense_act_fn": "gelu_new",
            "is_gated_act": true, "model_type": "umt5"}"#,
        "bench: UMT5-XXL widths",
    )?;
    Checkpoint::synthetic(STD).build(device, DType::F32, |w| Umt5Encoder::load(w, &config))
}

/// One block's adapter inputs stacked `k` times along the batch (as the pipeline's
/// batched guidance stacks its branches).
pub fn stack_extras(parts: &[&BlockExtras]) -> BlockExtras {
    BlockExtras::stack(parts).expect("same adapter inputs stack")
}
