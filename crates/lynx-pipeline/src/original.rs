//! The original `Wan-AI/Wan2.1-T2V-14B` folder, as Wan released it (before the diffusers
//! conversion), and what lynx-rs reads from where in it.
//!
//! | part | file | source of the fact |
//! |---|---|---|
//! | DiT config | `config.json`: `"_class_name": "WanModel"`, `"model_type": "t2v"`, `dim`, `ffn_dim`, `freq_dim`, `in_dim`, `out_dim`, `num_heads`, `num_layers`, `eps`, `text_len` | `Wan-Video/Wan2.1:wan/modules/model.py` (`WanModel` is a diffusers `ConfigMixin`; `patch_size`, `cross_attn_norm`, `qk_norm`, `text_dim`, `window_size` are in its `ignore_for_config`, so the file never holds them) and `wan/text2video.py` (`WanModel.from_pretrained(checkpoint_dir)`) |
//! | DiT weights | `diffusion_pytorch_model.safetensors.index.json` + `diffusion_pytorch_model-0000N-of-0000M.safetensors` (14B), or one `diffusion_pytorch_model.safetensors` (1.3B), in Wan's native keys | the same `from_pretrained`; the key names in `lynx_store::formats::layout` |
//! | text encoder | `models_t5_umt5-xxl-enc-bf16.pth`: a `torch.save` state dict of Wan's own `T5Encoder` (bf16) | `wan/configs/wan_t2v_14B.py` (`t5_checkpoint`), `wan/modules/t5.py` (`T5EncoderModel`: `load_state_dict(torch.load(checkpoint_path))`) |
//! | tokenizer | `google/umt5-xxl/` (`tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`, `spiece.model`; lynx-rs reads `tokenizer.json`) | `wan_t2v_14B.py` (`t5_tokenizer = 'google/umt5-xxl'`, opened with `AutoTokenizer.from_pretrained` in `wan/modules/tokenizers.py`); the file list from the Hub listings of the Wan2.1 repos as scripts that download them name it |
//! | VAE | `Wan2.1_VAE.pth`: a `torch.save` state dict (f32) in the native VAE keys | `wan_t2v_14B.py` (`vae_checkpoint`), `wan/modules/vae.py` (`_video_vae`: `load_state_dict(torch.load(pretrained_path))`) |
//!
//! Configs the folder does not hold are the released fixed ones, from Wan's code:
//!
//! - **DiT**: `patch_size` (1, 2, 2), `qk_norm` and `cross_attn_norm` on
//!   (`wan_t2v_14B.py`), head width `dim / num_heads`; `text_dim` is the text encoder's
//!   width (4096, `WanModel`'s default, the UMT5-XXL `dim`).
//! - **Text encoder**: UMT5-XXL encoder (`t5.py` `umt5_xxl`: vocab 256384, dim 4096,
//!   dim_attn 4096, dim_ffn 10240, 64 heads, 24 layers, 32 buckets, per-layer position
//!   bias; `T5LayerNorm` eps 1e-6; `T5RelativeEmbedding` max distance 128; tanh-GELU
//!   gate).
//! - **VAE**: `vae.py` `_video_vae` (dim 96, z_dim 16, dim_mult [1, 2, 4, 4],
//!   num_res_blocks 2, no attention scales, temporal downsampling [no, yes, yes]) with
//!   `WanVAE`'s latent mean and std (lynx-vae's `VaeConfig::default`).
//! - **Scheduler**: Wan's `FlowUniPCMultistepScheduler` with its defaults (1000 training
//!   timesteps, order 2, `bh2`, flow prediction, lower order at the end), which
//!   `text2video.py` builds with `shift=1` and then samples with `shift`: 5.0 for T2V
//!   (`generate.py` `_validate_args`: `sample_shift = 5.0` unless i2v at 480p (3.0) or
//!   flf2v/vace (16)); lynx-rs's UniPC with `flow_shift` 5.0.
//!
//! A folder whose text encoder or VAE is not the released one (the tiny test model) may
//! give its config as a diffusers folder does, in `text_encoder/config.json` or
//! `vae/config.json`; each, when present, replaces the released config.

use std::path::{Path, PathBuf};

use lynx_core::{Error, Result};
use lynx_dit::WanConfig;
use lynx_sampler::SchedulerConfig;
use lynx_text::{Activation, Umt5Config};
use lynx_vae::VaeConfig;
use serde_json::Value;

/// `_class_name` of Wan's `config.json`.
pub const WAN_MODEL_CLASS: &str = "WanModel";
/// The text encoder file (`wan_t2v_14B.py` `t5_checkpoint`).
pub const T5_FILE: &str = "models_t5_umt5-xxl-enc-bf16.pth";
/// The VAE file (`wan_t2v_14B.py` `vae_checkpoint`).
pub const VAE_FILE: &str = "Wan2.1_VAE.pth";
/// The tokenizer folder (`wan_t2v_14B.py` `t5_tokenizer`).
pub const TOKENIZER_DIR: &str = "google/umt5-xxl";
/// The DiT's shard index.
pub const DIT_INDEX: &str = "diffusion_pytorch_model.safetensors.index.json";
/// The DiT as one file (the 1.3B).
pub const DIT_FILE: &str = "diffusion_pytorch_model.safetensors";
/// The flow shift Wan's `generate.py` samples text-to-video with.
pub const WAN_T2V_SHIFT: f64 = 5.0;

/// Whether `base` holds a `config.json` whose `_class_name` is Wan's `WanModel`: the
/// original release's layout (a diffusers folder has `model_index.json` instead).
pub fn is_original(base: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(base.join("config.json")) else {
        return false;
    };
    matches!(
        serde_json::from_str::<Value>(&text),
        Ok(Value::Object(map)) if map.get("_class_name").and_then(Value::as_str) == Some(WAN_MODEL_CLASS)
    )
}

/// Whether `base` holds the original release's T5 and VAE files (to say that a folder
/// without `config.json` looks like one).
pub(crate) fn has_original_files(base: &Path) -> bool {
    base.join(T5_FILE).is_file() || base.join(VAE_FILE).is_file()
}

/// The DiT weights of the original folder `base`: its shard index, else its single file.
pub fn dit_weights(base: &Path) -> PathBuf {
    let index = base.join(DIT_INDEX);
    if index.is_file() {
        index
    } else {
        base.join(DIT_FILE)
    }
}

/// Checks that `base` is an original Wan2.1 text-to-video folder lynx-rs runs: its
/// `config.json` says `t2v`, and the DiT, T5, VAE and tokenizer are where Wan's code
/// reads them. Nothing else is read.
pub fn check(base: &Path) -> Result<()> {
    let path = base.join("config.json");
    let raw = raw_config(&path)?;
    match raw.get("model_type").and_then(Value::as_str) {
        Some("t2v") | None => {}
        Some(other) => {
            return Err(Error::config(
                &path,
                format!(
                    "`model_type` is \"{}\": lynx-rs runs Wan2.1 text-to-video (\"t2v\")",
                    other.escape_debug()
                ),
            ));
        }
    }
    let wanted = [
        (dit_weights(base), "the DiT (shard index or single file)"),
        (base.join(T5_FILE), "the UMT5 text encoder"),
        (base.join(VAE_FILE), "the VAE"),
        (
            base.join(TOKENIZER_DIR).join("tokenizer.json"),
            "the UMT5 tokenizer",
        ),
    ];
    for (file, what) in wanted {
        if !file.is_file() {
            return Err(Error::MissingFile {
                path: file,
                hint: format!(
                    "{} is an original Wan2.1 folder (config.json names WanModel), which \
                     keeps {what} there",
                    base.display()
                ),
            });
        }
    }
    Ok(())
}

/// `config.json` as a JSON object.
fn raw_config(path: &Path) -> Result<serde_json::Map<String, Value>> {
    match lynx_core::config::load_json::<Value>(path)? {
        Value::Object(map) => Ok(map),
        _ => Err(Error::config(path, "expected a JSON object")),
    }
}

/// The DiT config from Wan's `config.json` in `base`, completed with the released fixed
/// values (see the module docs); `text_dim` is the text encoder's width.
pub fn dit_config(base: &Path, text_dim: usize) -> Result<WanConfig> {
    let path = base.join("config.json");
    let raw = raw_config(&path)?;
    let mut cfg = WanConfig::default();
    let size = |key: &str, default: usize| -> Result<usize> {
        match raw.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| {
                    Error::config(
                        &path,
                        format!("`{key}` is {v}, expected a positive integer"),
                    )
                }),
        }
    };
    let dim = size("dim", cfg.inner_dim())?;
    let heads = size("num_heads", cfg.num_attention_heads)?;
    if !dim.is_multiple_of(heads) {
        return Err(Error::config(
            &path,
            format!("`dim` {dim} is not a multiple of `num_heads` {heads}"),
        ));
    }
    cfg.num_attention_heads = heads;
    cfg.attention_head_dim = dim / heads;
    cfg.in_channels = size("in_dim", cfg.in_channels)?;
    cfg.out_channels = Some(size("out_dim", cfg.in_channels)?);
    cfg.ffn_dim = size("ffn_dim", cfg.ffn_dim)?;
    cfg.freq_dim = size("freq_dim", cfg.freq_dim)?;
    cfg.num_layers = size("num_layers", cfg.num_layers)?;
    cfg.text_dim = size("text_dim", text_dim)?;
    if let Some(v) = raw.get("eps") {
        cfg.eps = v
            .as_f64()
            .filter(|e| *e > 0.0)
            .ok_or_else(|| Error::config(&path, format!("`eps` is {v}, expected a number")))?;
    }
    cfg.class_name = None;
    cfg.path = path;
    cfg.validate()?;
    Ok(cfg)
}

/// The released UMT5-XXL encoder config (`t5.py` `umt5_xxl`), or the folder's
/// `text_encoder/config.json` when it has one.
pub fn text_config(base: &Path) -> Result<Umt5Config> {
    let own = base.join("text_encoder").join("config.json");
    if own.is_file() {
        return Umt5Config::load(own);
    }
    Ok(released_text_config(&base.join(T5_FILE)))
}

/// The released UMT5-XXL encoder config (`t5.py` `umt5_xxl`, see the module docs), for
/// the weights in `file` (named in errors).
pub fn released_text_config(file: &Path) -> Umt5Config {
    Umt5Config {
        vocab_size: 256_384,
        d_model: 4096,
        d_kv: 64,
        d_ff: 10_240,
        num_heads: 64,
        num_layers: 24,
        relative_attention_num_buckets: 32,
        relative_attention_max_distance: 128,
        layer_norm_epsilon: 1e-6,
        activation: Activation::GeluTanh,
        path: PathBuf::from(format!(
            "<the released UMT5-XXL config, for {}>",
            file.display()
        )),
    }
}

/// The released Wan2.1 VAE config (`vae.py` `_video_vae`, `WanVAE`'s latent statistics),
/// or the folder's `vae/config.json` when it has one.
pub fn vae_config(base: &Path) -> Result<VaeConfig> {
    let own = base.join("vae").join("config.json");
    if own.is_file() {
        return VaeConfig::load(own);
    }
    Ok(released_vae_config(&base.join(VAE_FILE)))
}

/// The released Wan2.1 VAE config, for the weights in `file` (named in errors).
pub fn released_vae_config(file: &Path) -> VaeConfig {
    VaeConfig {
        path: PathBuf::from(format!(
            "<the released Wan2.1 VAE config, for {}>",
            file.display()
        )),
        ..VaeConfig::default()
    }
}

/// The scheduler Wan's text-to-video sampling uses (see the module docs).
pub fn scheduler() -> SchedulerConfig {
    SchedulerConfig {
        path: PathBuf::from("<Wan2.1 T2V sampling defaults: UniPC, flow shift 5>"),
        ..SchedulerConfig::flow(WAN_T2V_SHIFT)
    }
}
