//! `text_encoder/config.json` (transformers `UMT5Config`).

use std::path::{Path, PathBuf};

use lynx_core::config::{load_json, unsupported};
use lynx_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// The activation of the feed-forward block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// GELU with the tanh approximation (`gelu_new`, `gelu_pytorch_tanh`): UMT5's.
    GeluTanh,
    /// Exact (erf) GELU (`gelu`).
    Gelu,
    /// `relu`.
    Relu,
    /// `silu` / `swish`.
    Silu,
}

/// The UMT5 encoder's sizes and settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Umt5Config {
    /// Rows of the token embedding (umt5-xxl: 256384).
    pub vocab_size: usize,
    /// Width of the hidden states (umt5-xxl: 4096).
    pub d_model: usize,
    /// Size of one attention head.
    pub d_kv: usize,
    /// Hidden width of the feed-forward blocks (umt5-xxl: 10240).
    pub d_ff: usize,
    /// Attention heads (umt5-xxl: 64).
    pub num_heads: usize,
    /// Encoder blocks (umt5-xxl: 24).
    pub num_layers: usize,
    /// Relative-position buckets per layer (32).
    pub relative_attention_num_buckets: usize,
    /// Distance beyond which positions share the last bucket (128).
    pub relative_attention_max_distance: usize,
    /// Epsilon of the RMS norms.
    pub layer_norm_epsilon: f64,
    /// Activation of the gated feed-forward block.
    pub activation: Activation,
    /// The file this was read from, for error messages.
    pub path: PathBuf,
}

/// `config.json` as transformers writes it (and as [`Umt5Config`] is serialised).
#[derive(Deserialize, Serialize)]
struct RawConfig {
    model_type: Option<String>,
    #[serde(default = "default_vocab")]
    vocab_size: usize,
    d_model: usize,
    d_kv: usize,
    d_ff: usize,
    num_heads: usize,
    num_layers: usize,
    #[serde(default = "default_buckets")]
    relative_attention_num_buckets: usize,
    #[serde(default = "default_max_distance")]
    relative_attention_max_distance: usize,
    #[serde(default = "default_eps")]
    layer_norm_epsilon: f64,
    #[serde(default = "default_ffn")]
    feed_forward_proj: String,
    dense_act_fn: Option<String>,
    is_gated_act: Option<bool>,
}

fn default_vocab() -> usize {
    250_112
}
fn default_buckets() -> usize {
    32
}
fn default_max_distance() -> usize {
    128
}
fn default_eps() -> f64 {
    1e-6
}
fn default_ffn() -> String {
    "gated-gelu".into()
}

/// Written as transformers' `UMT5Config` fields that [`Umt5Config::load`] reads back to
/// the same value (`model_type`, the sizes, `layer_norm_epsilon`, the gated activation).
impl Serialize for Umt5Config {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        let act = match self.activation {
            Activation::GeluTanh => "gelu_new",
            Activation::Gelu => "gelu",
            Activation::Relu => "relu",
            Activation::Silu => "silu",
        };
        RawConfig {
            model_type: Some("umt5".into()),
            vocab_size: self.vocab_size,
            d_model: self.d_model,
            d_kv: self.d_kv,
            d_ff: self.d_ff,
            num_heads: self.num_heads,
            num_layers: self.num_layers,
            relative_attention_num_buckets: self.relative_attention_num_buckets,
            relative_attention_max_distance: self.relative_attention_max_distance,
            layer_norm_epsilon: self.layer_norm_epsilon,
            feed_forward_proj: "gated-gelu".into(),
            dense_act_fn: Some(act.into()),
            is_gated_act: Some(true),
        }
        .serialize(serializer)
    }
}

impl Umt5Config {
    /// Reads `config.json` from `path` (the file or the `text_encoder/` folder).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = if path.is_dir() {
            path.join("config.json")
        } else {
            path.to_path_buf()
        };
        let raw: RawConfig = load_json(&file)?;
        Self::from_raw(raw, &file)
    }

    /// Parses the JSON `text` of a config read from `path` (used in messages).
    pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<Self> {
        let raw: RawConfig = lynx_core::config::parse_json(text, path.as_ref())?;
        Self::from_raw(raw, path.as_ref())
    }

    fn from_raw(raw: RawConfig, path: &Path) -> Result<Self> {
        if let Some(t) = raw.model_type.as_deref()
            && t != "umt5"
        {
            return Err(unsupported(
                path,
                "model_type",
                t,
                "lynx-text implements the UMT5 encoder (a relative position bias in every layer)",
            ));
        }
        // transformers derives the activation and gating from `feed_forward_proj`, and a
        // saved `dense_act_fn` / `is_gated_act` overrides them.
        let act_name = raw
            .feed_forward_proj
            .rsplit('-')
            .next()
            .unwrap_or_default()
            .to_string();
        let gated_from_proj = raw.feed_forward_proj.starts_with("gated-");
        let act_name = match raw.dense_act_fn {
            Some(a) => a,
            None if raw.feed_forward_proj == "gated-gelu" => "gelu_new".into(),
            None => act_name,
        };
        let gated = raw.is_gated_act.unwrap_or(gated_from_proj);
        if !gated {
            return Err(unsupported(
                path,
                "is_gated_act",
                gated,
                "UMT5 checkpoints use the gated feed-forward block (wi_0, wi_1, wo)",
            ));
        }
        let activation = match act_name.as_str() {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "gelu" => Activation::Gelu,
            "relu" => Activation::Relu,
            "silu" | "swish" => Activation::Silu,
            other => {
                return Err(unsupported(
                    path,
                    "dense_act_fn",
                    other,
                    "known activations are gelu_new, gelu_pytorch_tanh, gelu, relu, silu",
                ));
            }
        };
        let cfg = Self {
            vocab_size: raw.vocab_size,
            d_model: raw.d_model,
            d_kv: raw.d_kv,
            d_ff: raw.d_ff,
            num_heads: raw.num_heads,
            num_layers: raw.num_layers,
            relative_attention_num_buckets: raw.relative_attention_num_buckets,
            relative_attention_max_distance: raw.relative_attention_max_distance,
            layer_norm_epsilon: raw.layer_norm_epsilon,
            activation,
            path: path.to_path_buf(),
        };
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("d_kv", self.d_kv),
            ("d_ff", self.d_ff),
            ("num_heads", self.num_heads),
            ("num_layers", self.num_layers),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Err(Error::config(path, format!("`{name}` must be positive")));
        }
        if self.num_heads.checked_mul(self.d_kv).is_none() {
            return Err(Error::config(
                path,
                "`num_heads` × `d_kv` overflows: the sizes are corrupt",
            ));
        }
        // Bidirectional buckets: half per direction, half of those exact.
        if self.relative_attention_num_buckets < 4 {
            return Err(Error::config(
                path,
                "`relative_attention_num_buckets` must be at least 4",
            ));
        }
        if self.relative_attention_max_distance <= self.relative_attention_num_buckets / 4 {
            return Err(Error::config(
                path,
                "`relative_attention_max_distance` must exceed a quarter of the bucket count",
            ));
        }
        Ok(())
    }

    /// `num_heads · d_kv`, the width of q, k, v.
    pub fn inner_dim(&self) -> usize {
        self.num_heads * self.d_kv
    }
}
