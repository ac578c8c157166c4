//! The model sets this tool writes, each made of the models' own config types
//! ([`WanConfig`], [`Umt5Config`], [`VaeConfig`], [`ResamplerConfig`]) plus what only
//! the files decide (folder name, shard sizes, register count, lite interval).

use std::path::PathBuf;

use lynx_adapters::ResamplerConfig;
use lynx_dit::WanConfig;
use lynx_text::{Activation, Umt5Config};
use lynx_vae::VaeConfig;

/// Lynx-lite's adapter: its resampler and the interval of its IP layers (on DiT blocks
/// `0, interval, 2·interval, …`).
#[derive(Debug, Clone, PartialEq)]
pub struct Lite {
    /// The lite resampler; its `output_dim` is the IP layers' input width.
    pub resampler: ResamplerConfig,
    /// IP layers sit on blocks `0, interval, 2·interval, …`.
    pub interval: usize,
}

/// Everything one synthetic model set is made of.
#[derive(Debug, Clone)]
pub struct ModelSet {
    /// Folder of the Wan pipeline, e.g. `Wan2.1-T2V-14B-Diffusers`.
    pub wan_folder: String,
    /// The DiT.
    pub dit: WanConfig,
    /// The text encoder.
    pub text: Umt5Config,
    /// The VAE.
    pub vae: VaeConfig,
    /// Lynx (full) ID resampler; `output_dim` should equal the DiT width.
    pub resampler: ResamplerConfig,
    /// Lynx (full) learned register tokens per block (`N.registers`, `[1, R, output_dim]`):
    /// a size only the file holds.
    pub n_registers: usize,
    /// Lynx-lite, if it is to be written.
    pub lite: Option<Lite>,
    /// Scheduler `flow_shift`.
    pub flow_shift: f64,
    /// `max_shard_size` (bytes) the transformer was saved with (diffusers).
    pub dit_max_shard: u64,
    /// `max_shard_size` (bytes) the VAE was saved with (diffusers).
    pub vae_max_shard: u64,
    /// `max_shard_size` (bytes) the text encoder was saved with (transformers).
    pub text_max_shard: u64,
    /// Library of the transformer in `model_index.json` (`"diffusers"` in the release).
    pub transformer_library: String,
}

/// The model sets this crate can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Preset {
    /// The test fixture's sizes (`tests/fixtures/PRESET.json`).
    Tiny,
    /// `Wan-AI/Wan2.1-T2V-1.3B-Diffusers`, with Lynx adapters sized for its width.
    Wan1_3B,
    /// `Wan-AI/Wan2.1-T2V-14B-Diffusers` + `ByteDance/lynx` (`lynx_full`, `lynx_lite`).
    Wan14B,
}

/// 5 GB, as `huggingface_hub` parses `"5GB"` (decimal).
pub const GB5: u64 = 5_000_000_000;

impl Preset {
    /// The configs of this preset.
    pub fn model_set(self) -> ModelSet {
        match self {
            Preset::Tiny => tiny(),
            Preset::Wan1_3B => real("Wan2.1-T2V-1.3B-Diffusers", 12, 30, 8960),
            Preset::Wan14B => real("Wan2.1-T2V-14B-Diffusers", 40, 40, 13824),
        }
    }
}

/// A DiT config as `transformer/config.json` holds it (`_class_name` set).
fn dit(heads: usize, head_dim: usize, layers: usize, ffn: usize) -> WanConfig {
    WanConfig {
        class_name: Some("WanTransformer3DModel".into()),
        num_attention_heads: heads,
        attention_head_dim: head_dim,
        num_layers: layers,
        ffn_dim: ffn,
        ..WanConfig::default()
    }
}

/// `google/umt5-xxl`'s encoder.
fn umt5_xxl() -> Umt5Config {
    Umt5Config {
        vocab_size: 256384,
        d_model: 4096,
        d_kv: 64,
        d_ff: 10240,
        num_heads: 64,
        num_layers: 24,
        relative_attention_num_buckets: 32,
        relative_attention_max_distance: 128,
        layer_norm_epsilon: 1e-6,
        activation: Activation::GeluTanh,
        path: PathBuf::from("<synthetic text_encoder/config.json>"),
    }
}

/// The released Lynx resampler (`dim_head=64`, 20 heads of 1280, `ff_mult=4`).
fn lynx_resampler(output_dim: usize) -> ResamplerConfig {
    ResamplerConfig {
        depth: 4,
        dim: 1280,
        dim_head: ResamplerConfig::LYNX_DIM_HEAD,
        heads: 20,
        num_queries: 16,
        embedding_dim: 512,
        output_dim,
        ff_inner_dim: 4 * 1280,
    }
}

fn real(folder: &str, heads: usize, layers: usize, ffn: usize) -> ModelSet {
    let dit = dit(heads, 128, layers, ffn);
    let dim = dit.inner_dim();
    ModelSet {
        wan_folder: folder.into(),
        dit,
        text: umt5_xxl(),
        vae: VaeConfig {
            class_name: Some("AutoencoderKLWan".into()),
            ..VaeConfig::default()
        },
        resampler: lynx_resampler(dim),
        n_registers: 16,
        lite: Some(Lite {
            resampler: lynx_resampler(2048),
            interval: 2,
        }),
        flow_shift: 3.0,
        dit_max_shard: GB5,
        vae_max_shard: GB5,
        text_max_shard: GB5,
        transformer_library: "diffusers".into(),
    }
}

fn tiny() -> ModelSet {
    let resampler = |embedding_dim, output_dim| ResamplerConfig {
        depth: 2,
        dim: 32,
        dim_head: 8,
        heads: 4,
        num_queries: 4,
        embedding_dim,
        output_dim,
        ff_inner_dim: 2 * 32,
    };
    ModelSet {
        wan_folder: "Wan2.1-T2V-tiny-Diffusers".into(),
        dit: WanConfig {
            freq_dim: 32,
            text_dim: 32,
            in_channels: 4,
            out_channels: Some(4),
            ..dit(2, 24, 2, 96)
        },
        text: Umt5Config {
            vocab_size: 200,
            d_model: 32,
            d_kv: 8,
            d_ff: 48,
            num_heads: 4,
            num_layers: 2,
            ..umt5_xxl()
        },
        vae: VaeConfig {
            class_name: Some("AutoencoderKLWan".into()),
            base_dim: 8,
            z_dim: 4,
            dim_mult: vec![1, 2, 2, 2],
            num_res_blocks: 1,
            latents_mean: vec![
                0.020481402054429054,
                -0.46899083256721497,
                0.25668057799339294,
                -0.5375335812568665,
            ],
            latents_std: vec![
                1.4493482112884521,
                1.2496588230133057,
                1.3515071868896484,
                1.2618017196655273,
            ],
            ..VaeConfig::default()
        },
        resampler: resampler(16, 48),
        n_registers: 2,
        lite: Some(Lite {
            resampler: resampler(512, 40),
            interval: 2,
        }),
        flow_shift: 3.0,
        // The fixture's transformer was saved with `max_shard_size="40KB"` (9 shards).
        dit_max_shard: 40_000,
        vae_max_shard: GB5,
        text_max_shard: GB5,
        // The fixture's `model_index.json` names Lynx's transformer module.
        transformer_library: "modules.full.transformer_wan".into(),
    }
}
