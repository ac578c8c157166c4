//! The sizes of every synthetic model, one struct per model, and the presets.
//!
//! Field names follow the `config.json` each model is released with (diffusers
//! `WanTransformer3DModel` and `AutoencoderKLWan`, transformers `UMT5Config`) and the
//! constructor arguments of Lynx's `Resampler` (`modules/common/resampler.py`).

/// `WanTransformer3DModel` (diffusers 0.33.1, `transformer/config.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct DitSpec {
    /// `num_attention_heads`.
    pub num_heads: usize,
    /// `attention_head_dim`; the model width is `num_heads * head_dim`.
    pub head_dim: usize,
    /// `num_layers` (transformer blocks).
    pub num_layers: usize,
    /// `ffn_dim`.
    pub ffn_dim: usize,
    /// `freq_dim` (sinusoidal timestep features).
    pub freq_dim: usize,
    /// `text_dim` (the text encoder's `d_model`).
    pub text_dim: usize,
    /// `in_channels` (the VAE's `z_dim`).
    pub in_channels: usize,
    /// `out_channels`.
    pub out_channels: usize,
    /// `patch_size` `[t, h, w]`.
    pub patch_size: [usize; 3],
    /// `eps`.
    pub eps: f64,
    /// `rope_max_seq_len`.
    pub rope_max_seq_len: usize,
}

impl DitSpec {
    /// Model width, `num_heads * head_dim`.
    pub fn dim(&self) -> usize {
        self.num_heads * self.head_dim
    }
}

/// `UMT5EncoderModel` (transformers, `text_encoder/config.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct TextSpec {
    /// `d_model`.
    pub d_model: usize,
    /// `d_ff` (gated-GELU inner width).
    pub d_ff: usize,
    /// `d_kv` (per-head width).
    pub d_kv: usize,
    /// `num_heads`.
    pub num_heads: usize,
    /// `num_layers` (encoder blocks).
    pub num_layers: usize,
    /// `num_decoder_layers` (config only: the encoder-only checkpoint has no decoder).
    pub num_decoder_layers: usize,
    /// `vocab_size`.
    pub vocab_size: usize,
    /// `relative_attention_num_buckets`.
    pub relative_attention_num_buckets: usize,
    /// `relative_attention_max_distance`.
    pub relative_attention_max_distance: usize,
}

/// `AutoencoderKLWan` (diffusers 0.33.1, `vae/config.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct VaeSpec {
    /// `base_dim`.
    pub base_dim: usize,
    /// `z_dim`.
    pub z_dim: usize,
    /// `dim_mult`.
    pub dim_mult: Vec<usize>,
    /// `num_res_blocks`.
    pub num_res_blocks: usize,
    /// `attn_scales` (encoder attention at these scales; empty for Wan2.1).
    pub attn_scales: Vec<f64>,
    /// `temperal_downsample` (sic).
    pub temperal_downsample: Vec<bool>,
    /// `latents_mean`, `z_dim` values.
    pub latents_mean: Vec<f64>,
    /// `latents_std`, `z_dim` values.
    pub latents_std: Vec<f64>,
}

/// Lynx's Perceiver `Resampler` (`modules/common/resampler.py`).
#[derive(Debug, Clone, PartialEq)]
pub struct ResamplerSpec {
    /// `depth` (attention + feed-forward layers).
    pub depth: usize,
    /// `dim` (latent width).
    pub dim: usize,
    /// `dim_head`.
    pub dim_head: usize,
    /// `heads`.
    pub heads: usize,
    /// `num_queries` (ID tokens).
    pub num_queries: usize,
    /// `embedding_dim` (face embedding width).
    pub embedding_dim: usize,
    /// `output_dim` (ID token width).
    pub output_dim: usize,
    /// `ff_mult`.
    pub ff_mult: usize,
}

/// Lynx-lite's adapter: a resampler and bias-free `to_k_ip`/`to_v_ip` on every
/// `interval`-th DiT block (`modules/lite/attention_processor.py`).
#[derive(Debug, Clone, PartialEq)]
pub struct LiteSpec {
    /// The lite resampler; its `output_dim` is the IP layers' input width.
    pub resampler: ResamplerSpec,
    /// IP layers sit on blocks `0, interval, 2 * interval, ...`.
    pub interval: usize,
}

/// Everything one synthetic model set is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// Folder of the Wan pipeline, e.g. `Wan2.1-T2V-14B-Diffusers`.
    pub wan_folder: String,
    /// The DiT.
    pub dit: DitSpec,
    /// The text encoder.
    pub text: TextSpec,
    /// The VAE.
    pub vae: VaeSpec,
    /// Lynx (full) ID resampler; `output_dim` should equal the DiT width.
    pub resampler: ResamplerSpec,
    /// Lynx (full) learned register tokens per block (`N.registers`, `[1, R, output_dim]`).
    pub n_registers: usize,
    /// Lynx-lite, if it is to be written.
    pub lite: Option<LiteSpec>,
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

/// The model sets this module can write.
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

/// Wan2.1 VAE `latents_mean`, as released.
pub const WAN_LATENTS_MEAN: [f64; 16] = [
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715, 0.5517,
    -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
];

/// Wan2.1 VAE `latents_std`, as released.
pub const WAN_LATENTS_STD: [f64; 16] = [
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652, 1.5579,
    1.6382, 1.1253, 2.8251, 1.9160,
];

impl Preset {
    /// The sizes of this preset.
    pub fn spec(self) -> ModelSpec {
        match self {
            Preset::Tiny => tiny(),
            Preset::Wan1_3B => real("Wan2.1-T2V-1.3B-Diffusers", 12, 30, 8960),
            Preset::Wan14B => real("Wan2.1-T2V-14B-Diffusers", 40, 40, 13824),
        }
    }
}

fn umt5_xxl() -> TextSpec {
    TextSpec {
        d_model: 4096,
        d_ff: 10240,
        d_kv: 64,
        num_heads: 64,
        num_layers: 24,
        num_decoder_layers: 24,
        vocab_size: 256384,
        relative_attention_num_buckets: 32,
        relative_attention_max_distance: 128,
    }
}

fn real(folder: &str, heads: usize, layers: usize, ffn: usize) -> ModelSpec {
    let dim = heads * 128;
    let resampler = |output_dim| ResamplerSpec {
        depth: 4,
        dim: 1280,
        dim_head: 64,
        heads: 20,
        num_queries: 16,
        embedding_dim: 512,
        output_dim,
        ff_mult: 4,
    };
    ModelSpec {
        wan_folder: folder.into(),
        dit: DitSpec {
            num_heads: heads,
            head_dim: 128,
            num_layers: layers,
            ffn_dim: ffn,
            freq_dim: 256,
            text_dim: 4096,
            in_channels: 16,
            out_channels: 16,
            patch_size: [1, 2, 2],
            eps: 1e-6,
            rope_max_seq_len: 1024,
        },
        text: umt5_xxl(),
        vae: VaeSpec {
            base_dim: 96,
            z_dim: 16,
            dim_mult: vec![1, 2, 4, 4],
            num_res_blocks: 2,
            attn_scales: vec![],
            temperal_downsample: vec![false, true, true],
            latents_mean: WAN_LATENTS_MEAN.to_vec(),
            latents_std: WAN_LATENTS_STD.to_vec(),
        },
        resampler: resampler(dim),
        n_registers: 16,
        lite: Some(LiteSpec {
            resampler: resampler(2048),
            interval: 2,
        }),
        flow_shift: 3.0,
        dit_max_shard: GB5,
        vae_max_shard: GB5,
        text_max_shard: GB5,
        transformer_library: "diffusers".into(),
    }
}

fn tiny() -> ModelSpec {
    let resampler = |embedding_dim, output_dim| ResamplerSpec {
        depth: 2,
        dim: 32,
        dim_head: 8,
        heads: 4,
        num_queries: 4,
        embedding_dim,
        output_dim,
        ff_mult: 2,
    };
    ModelSpec {
        wan_folder: "Wan2.1-T2V-tiny-Diffusers".into(),
        dit: DitSpec {
            num_heads: 2,
            head_dim: 24,
            num_layers: 2,
            ffn_dim: 96,
            freq_dim: 32,
            text_dim: 32,
            in_channels: 4,
            out_channels: 4,
            patch_size: [1, 2, 2],
            eps: 1e-6,
            rope_max_seq_len: 1024,
        },
        text: TextSpec {
            d_model: 32,
            d_ff: 48,
            d_kv: 8,
            num_heads: 4,
            num_layers: 2,
            num_decoder_layers: 2,
            vocab_size: 200,
            relative_attention_num_buckets: 32,
            relative_attention_max_distance: 128,
        },
        vae: VaeSpec {
            base_dim: 8,
            z_dim: 4,
            dim_mult: vec![1, 2, 2, 2],
            num_res_blocks: 1,
            attn_scales: vec![],
            temperal_downsample: vec![false, true, true],
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
        },
        resampler: resampler(16, 48),
        n_registers: 2,
        lite: Some(LiteSpec {
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
