//! The DiT's config read off its weights, for a single DiT file given without its
//! `config.json` (a ComfyUI or city96 file, a native Wan checkpoint).
//!
//! Every size but the head count is a weight's shape (the keys as the loaders read
//! them, in diffusers' names, whatever layout the file is in):
//!
//! | field | from |
//! |---|---|
//! | `patch_size`, `in_channels`, width `dim` | `patch_embedding.weight` `[dim, in_channels, pt, ph, pw]` |
//! | `out_channels` | `proj_out.weight` `[out_channels · pt · ph · pw, dim]` |
//! | `text_dim` | `condition_embedder.text_embedder.linear_1.weight` `[dim, text_dim]` |
//! | `freq_dim` | `condition_embedder.time_embedder.linear_1.weight` `[dim, freq_dim]` |
//! | `ffn_dim` | `blocks.0.ffn.net.0.proj.weight` `[ffn_dim, dim]` |
//! | `num_layers` | the blocks `blocks.{i}.attn1.to_q.weight`, counted from 0 |
//! | `qk_norm` | `blocks.0.attn1.norm_q.weight` present: `rms_norm_across_heads` |
//! | `cross_attn_norm` | `blocks.0.norm2.weight` present |
//! | `added_kv_proj_dim` | `blocks.0.attn2.add_k_proj.weight` (image-to-video: refused by [`WanConfig::validate`]) |
//!
//! The head count is not in any shape: it is `dim / 128`, the head width of both
//! released Wan2.1 text-to-video models (`Wan-Video/Wan2.1:wan/configs/wan_t2v_1_3B.py`:
//! dim 1536, 12 heads; `wan_t2v_14B.py`: dim 5120, 40 heads). `eps` (1e-6) and
//! `rope_max_seq_len` (1024) are the released values too. A width that is not a multiple
//! of 128 is not a released model: the error says to give its config.

use std::path::Path;

use lynx_core::{Error, Result};
use lynx_store::Checkpoint;

use crate::config::{QK_NORM_ACROSS_HEADS, WanConfig};

/// The head width of the released Wan2.1 models.
pub const RELEASED_HEAD_DIM: usize = 128;

/// More blocks than any file could hold: the count stops here (it is bounded by the
/// file's tensors anyway).
const MAX_BLOCKS: usize = 1 << 16;

impl WanConfig {
    /// The config of the DiT in `ckpt`, read off its weights' shapes (see the module
    /// docs), validated.
    pub fn from_checkpoint(ckpt: &Checkpoint) -> Result<Self> {
        Self::from_shapes(|key| ckpt.shape(key).map(<[usize]>::to_vec), ckpt.path())
    }

    /// [`WanConfig::from_checkpoint`] with `shape` giving each key's shape (`None`:
    /// absent) in the file `origin` (named in errors).
    pub fn from_shapes(shape: impl Fn(&str) -> Option<Vec<usize>>, origin: &Path) -> Result<Self> {
        let need = |key: &str, rank: usize| -> Result<Vec<usize>> {
            let s = shape(key).ok_or_else(|| Error::MissingKey {
                path: origin.to_path_buf(),
                key: key.into(),
            })?;
            if s.len() != rank || s.contains(&0) {
                return Err(Error::Shape {
                    path: origin.to_path_buf(),
                    key: key.into(),
                    expected: vec![0; rank],
                    found: s,
                });
            }
            Ok(s)
        };
        let patch = need("patch_embedding.weight", 5)?;
        let (dim, in_channels) = (patch[0], patch[1]);
        let patch_size = [patch[2], patch[3], patch[4]];
        if !dim.is_multiple_of(RELEASED_HEAD_DIM) {
            return Err(Error::config(
                origin,
                format!(
                    "the DiT's width (`patch_embedding.weight` {patch:?}) is {dim}, not a \
                     multiple of {RELEASED_HEAD_DIM}, the head width of the released Wan2.1 \
                     models, so its head count is unknown: give the model's config (a model \
                     folder, --model)"
                ),
            ));
        }
        // The width each weight is read against; the loaders check every other shape.
        let width = |key: &str, axis: usize| -> Result<usize> {
            let s = need(key, 2)?;
            if s[1 - axis] != dim {
                let mut expected = s.clone();
                expected[1 - axis] = dim;
                return Err(Error::Shape {
                    path: origin.to_path_buf(),
                    key: key.into(),
                    expected,
                    found: s,
                });
            }
            Ok(s[axis])
        };
        let volume: usize = patch_size.iter().product();
        let out = width("proj_out.weight", 0)?;
        if !out.is_multiple_of(volume) {
            return Err(Error::config(
                origin,
                format!(
                    "`proj_out.weight` has {out} rows, not a multiple of the patch volume \
                     {volume} ({patch_size:?})"
                ),
            ));
        }
        let layer = |i: usize| format!("blocks.{i}.attn1.to_q.weight");
        let num_layers = (0..MAX_BLOCKS)
            .find(|&i| shape(&layer(i)).is_none())
            .unwrap_or(MAX_BLOCKS);
        if num_layers == 0 {
            return Err(Error::MissingKey {
                path: origin.to_path_buf(),
                key: layer(0),
            });
        }
        let mut cfg = WanConfig {
            patch_size,
            num_attention_heads: dim / RELEASED_HEAD_DIM,
            attention_head_dim: RELEASED_HEAD_DIM,
            in_channels,
            out_channels: Some(out / volume),
            text_dim: width("condition_embedder.text_embedder.linear_1.weight", 1)?,
            freq_dim: width("condition_embedder.time_embedder.linear_1.weight", 1)?,
            ffn_dim: width("blocks.0.ffn.net.0.proj.weight", 0)?,
            num_layers,
            cross_attn_norm: shape("blocks.0.norm2.weight").is_some(),
            qk_norm: shape("blocks.0.attn1.norm_q.weight").map(|_| QK_NORM_ACROSS_HEADS.into()),
            added_kv_proj_dim: shape("blocks.0.attn2.add_k_proj.weight")
                .map(|s| serde_json::json!(s.last().copied().unwrap_or(0))),
            ..WanConfig::default()
        };
        cfg.class_name = None;
        cfg.path = origin.to_path_buf();
        cfg.validate()?;
        Ok(cfg)
    }
}
