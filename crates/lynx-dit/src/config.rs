//! `transformer/config.json` of a diffusers Wan2.1 folder (`WanTransformer3DModel`).
//!
//! Absent fields take the defaults of diffusers 0.33.1's constructor (the 14B model's
//! sizes). [`WanConfig::validate`] rejects what this crate does not implement — the I2V
//! image branch (`image_dim`, `added_kv_proj_dim`), other `qk_norm` kinds, other model
//! classes — naming the field and the file, instead of silently ignoring it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lynx_core::config::{load_json, unsupported};
use lynx_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// The one query/key normalisation Wan2.1 uses: RMS norm over all heads at once.
pub const QK_NORM_ACROSS_HEADS: &str = "rms_norm_across_heads";

/// Hyper-parameters of the Wan2.1 DiT, as `WanTransformer3DModel.__init__` takes them.
/// Serialises back to the fields of `config.json` (with `extra` beside them).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct WanConfig {
    /// `_class_name`; only `WanTransformer3DModel` is implemented.
    #[serde(rename = "_class_name", default)]
    pub class_name: Option<String>,
    /// `(t, h, w)` patch of the Conv3d patch embedding.
    #[serde(default = "defaults::patch_size")]
    pub patch_size: [usize; 3],
    /// Attention heads (14B: 40).
    #[serde(default = "defaults::num_attention_heads")]
    pub num_attention_heads: usize,
    /// Width of one head (128).
    #[serde(default = "defaults::attention_head_dim")]
    pub attention_head_dim: usize,
    /// Latent channels in.
    #[serde(default = "defaults::in_channels")]
    pub in_channels: usize,
    /// Latent channels out; `None`/0 means `in_channels`.
    #[serde(default = "defaults::out_channels")]
    pub out_channels: Option<usize>,
    /// Width of the text encoder's hidden states (UMT5: 4096).
    #[serde(default = "defaults::text_dim")]
    pub text_dim: usize,
    /// Width of the sinusoidal timestep embedding.
    #[serde(default = "defaults::freq_dim")]
    pub freq_dim: usize,
    /// Hidden width of the feed-forward blocks (14B: 13824).
    #[serde(default = "defaults::ffn_dim")]
    pub ffn_dim: usize,
    /// Number of transformer blocks (14B: 40).
    #[serde(default = "defaults::num_layers")]
    pub num_layers: usize,
    /// Whether cross-attention reads an affine layer norm of the hidden states
    /// (`norm2`); otherwise the hidden states themselves.
    #[serde(default = "defaults::cross_attn_norm")]
    pub cross_attn_norm: bool,
    /// Query/key normalisation; only [`QK_NORM_ACROSS_HEADS`] is implemented.
    #[serde(default = "defaults::qk_norm")]
    pub qk_norm: Option<String>,
    /// Epsilon of every norm.
    #[serde(default = "defaults::eps")]
    pub eps: f64,
    /// Width of CLIP image features (I2V only): must be absent or null.
    #[serde(default)]
    pub image_dim: Option<serde_json::Value>,
    /// Extra K/V projections for image tokens (I2V only): must be absent or null.
    #[serde(default)]
    pub added_kv_proj_dim: Option<serde_json::Value>,
    /// Positions per axis for which RoPE frequencies exist.
    #[serde(default = "defaults::rope_max_seq_len")]
    pub rope_max_seq_len: usize,
    /// Fields diffusers 0.33.1 does not know; a few of later versions change the model.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
    /// Where the config was read from (for error messages).
    #[serde(skip)]
    pub path: PathBuf,
}

mod defaults {
    pub fn patch_size() -> [usize; 3] {
        [1, 2, 2]
    }
    pub fn num_attention_heads() -> usize {
        40
    }
    pub fn attention_head_dim() -> usize {
        128
    }
    pub fn in_channels() -> usize {
        16
    }
    pub fn out_channels() -> Option<usize> {
        Some(16)
    }
    pub fn text_dim() -> usize {
        4096
    }
    pub fn freq_dim() -> usize {
        256
    }
    pub fn ffn_dim() -> usize {
        13824
    }
    pub fn num_layers() -> usize {
        40
    }
    pub fn cross_attn_norm() -> bool {
        true
    }
    pub fn qk_norm() -> Option<String> {
        Some(super::QK_NORM_ACROSS_HEADS.into())
    }
    pub fn eps() -> f64 {
        1e-6
    }
    pub fn rope_max_seq_len() -> usize {
        1024
    }
}

impl Default for WanConfig {
    /// Wan2.1-T2V-14B.
    fn default() -> Self {
        serde_json::from_str("{}").expect("every field has a default")
    }
}

impl WanConfig {
    /// Reads `config.json` from a `transformer/` folder (or the file itself) and
    /// validates it.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = if path.is_dir() {
            path.join("config.json")
        } else {
            path.to_path_buf()
        };
        let mut cfg: WanConfig = load_json(&file)?;
        cfg.path = file;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Model width: `heads × head_dim`.
    pub fn inner_dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }

    /// Output channels (`out_channels or in_channels`).
    pub fn out_channels(&self) -> usize {
        match self.out_channels {
            Some(c) if c > 0 => c,
            _ => self.in_channels,
        }
    }

    /// Positions in one patch: `pt · ph · pw` (times the channels, the width of a
    /// flattened patch).
    pub fn patch_volume(&self) -> usize {
        self.patch_size.iter().product()
    }

    /// Rejects settings this crate does not implement, all of them in one message.
    pub fn validate(&self) -> Result<()> {
        let p = &self.path;
        let mut problems: Vec<String> = Vec::new();
        let mut reject = |e: Error| {
            problems.push(match e {
                Error::Config { reason, .. } => reason,
                other => other.to_string(),
            })
        };
        let i2v = "image-to-video (I2V) Wan models are not implemented; use a T2V transformer";
        if let Some(v) = self.image_dim.as_ref().filter(|v| !v.is_null()) {
            reject(unsupported(p, "image_dim", Json(v), i2v));
        }
        if let Some(v) = self.added_kv_proj_dim.as_ref().filter(|v| !v.is_null()) {
            reject(unsupported(p, "added_kv_proj_dim", Json(v), i2v));
        }
        if let Some(name) = &self.class_name
            && name != "WanTransformer3DModel"
        {
            reject(unsupported(
                p,
                "_class_name",
                name,
                "only WanTransformer3DModel is implemented",
            ));
        }
        if self.qk_norm.as_deref() != Some(QK_NORM_ACROSS_HEADS) {
            reject(unsupported(
                p,
                "qk_norm",
                &self.qk_norm,
                "only \"rms_norm_across_heads\" (Wan2.1) is implemented",
            ));
        }
        // Options of diffusers versions after 0.33.1 that change the computation.
        for key in ["pos_embed_seq_len", "image_embed_dim"] {
            if let Some(v) = self.extra.get(key).filter(|v| !v.is_null()) {
                reject(unsupported(
                    p,
                    key,
                    Json(v),
                    "not part of the Wan2.1 T2V model",
                ));
            }
        }
        let positive = [
            ("num_attention_heads", self.num_attention_heads),
            ("attention_head_dim", self.attention_head_dim),
            ("in_channels", self.in_channels),
            ("text_dim", self.text_dim),
            ("freq_dim", self.freq_dim),
            ("ffn_dim", self.ffn_dim),
            ("num_layers", self.num_layers),
            ("rope_max_seq_len", self.rope_max_seq_len),
        ];
        for (name, v) in positive {
            if v == 0 {
                reject(unsupported(p, name, v, "must be positive"));
            }
        }
        if self.patch_size.contains(&0) {
            reject(unsupported(
                p,
                "patch_size",
                self.patch_size,
                "must be positive",
            ));
        }
        if !self.attention_head_dim.is_multiple_of(2) {
            reject(unsupported(
                p,
                "attention_head_dim",
                self.attention_head_dim,
                "RoPE needs an even head dimension",
            ));
        }
        if !self.freq_dim.is_multiple_of(2) {
            reject(unsupported(
                p,
                "freq_dim",
                self.freq_dim,
                "the sinusoidal embedding needs an even width",
            ));
        }
        if self.eps.is_nan() || self.eps <= 0.0 {
            reject(unsupported(p, "eps", self.eps, "must be positive"));
        }
        // Every width the model computes must fit a usize (the sizes are checked against
        // the weights' shapes when the model is built).
        let [pt, ph, pw] = self.patch_size;
        let products = [
            (
                "num_attention_heads × attention_head_dim",
                self.num_attention_heads
                    .checked_mul(self.attention_head_dim),
            ),
            (
                "in_channels × patch volume",
                pt.checked_mul(ph)
                    .and_then(|v| v.checked_mul(pw))
                    .and_then(|v| v.checked_mul(self.in_channels.max(self.out_channels()))),
            ),
        ];
        for (what, v) in products {
            if v.is_none() {
                reject(Error::config(
                    p,
                    format!("{what} overflows: the sizes are corrupt"),
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::config(p, problems.join("; ")))
        }
    }
}

/// Shows a JSON value as it is written in the file.
struct Json<'a>(&'a serde_json::Value);

impl std::fmt::Debug for Json<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}
