//! A model given as its three weight files alone, without a model folder: the DiT file
//! (native Wan keys, ComfyUI's `model.diffusion_model.` files, fp8, scaled fp8, GGUF),
//! the UMT5 text encoder file and the VAE file, as ComfyUI users hold them. What a
//! folder would say is taken from the files and from the released models:
//!
//! | part | from |
//! |---|---|
//! | DiT config | its weights' shapes, 128-wide heads ([`lynx_dit::detect`]): any Wan2.1 T2V DiT (1.3B, 14B, fine-tunes of them) |
//! | text encoder config | the released UMT5-XXL ([`crate::original::released_text_config`]); the file must be one (`shared.weight` `[256384, 4096]`, 24 blocks) |
//! | tokenizer | the text encoder file's `spiece_model` (ComfyUI's `umt5_xxl_*.safetensors` carry it; see [`lynx_text::spiece`]) |
//! | VAE config | the released Wan2.1 VAE ([`crate::original::released_vae_config`]): `encoder.conv_in.weight` `[96, 3, 3, 3, 3]`, `post_quant_conv.weight` `[16, 16, 1, 1, 1]` |
//! | scheduler | Wan's text-to-video sampling: UniPC, flow shift 5 ([`crate::original::scheduler`]) |
//!
//! Other text encoders or VAEs (the tiny test model's), or a text encoder file without its
//! tokenizer, need a model folder for their configs: the errors say so.

use std::path::Path;

use lynx_core::{Error, Result};
use lynx_dit::WanConfig;
use lynx_store::Checkpoint;
use lynx_text::{MAX_SEQUENCE_LENGTH, Tokenizer};

use crate::original::{released_text_config, released_vae_config};

/// Where a non-released part's config must come from instead.
const GIVE_A_FOLDER: &str = "without a model folder the released configs are used; give the model folder (--model) \
     for another model's";

/// Checks that the text encoder in `text_encoder` and the VAE in `vae` are the released
/// ones (their configs are not in the files), and that the text encoder file carries
/// its tokenizer. Only headers are read.
pub fn check(text_encoder: &Path, vae: &Path) -> Result<()> {
    let te = Checkpoint::open(text_encoder)?;
    let released = released_text_config(text_encoder);
    let last = format!(
        "encoder.block.{}.layer.0.SelfAttention.q.weight",
        released.num_layers - 1
    );
    let past = format!(
        "encoder.block.{}.layer.0.SelfAttention.q.weight",
        released.num_layers
    );
    expect(
        &te,
        "shared.weight",
        &[released.vocab_size, released.d_model],
        "UMT5-XXL",
    )?;
    if !te.contains(&last) || te.contains(&past) {
        return Err(Error::config(
            text_encoder,
            format!(
                "the text encoder is not UMT5-XXL's {} blocks; {GIVE_A_FOLDER}",
                released.num_layers
            ),
        ));
    }
    if te.embedded(lynx_store::formats::SPIECE_MODEL).is_none() {
        return Err(Error::MissingFile {
            path: text_encoder.to_path_buf(),
            hint: format!(
                "the tokenizer: without a model folder it is read from the text encoder \
                 file's `{}` (ComfyUI's umt5_xxl files carry it), which this file lacks; \
                 give the model folder (--model) for its tokenizer/",
                lynx_store::formats::SPIECE_MODEL
            ),
        });
    }
    let vae_ckpt = Checkpoint::open(vae)?;
    let cfg = released_vae_config(vae);
    expect(
        &vae_ckpt,
        "encoder.conv_in.weight",
        &[cfg.base_dim, 3, 3, 3, 3],
        "Wan2.1 VAE",
    )?;
    expect(
        &vae_ckpt,
        "post_quant_conv.weight",
        &[cfg.z_dim, cfg.z_dim, 1, 1, 1],
        "Wan2.1 VAE",
    )
}

/// An error unless `key` of `ckpt` has the released model `what`'s `shape`.
fn expect(ckpt: &Checkpoint, key: &str, shape: &[usize], what: &str) -> Result<()> {
    match ckpt.shape(key) {
        Some(found) if found == shape => Ok(()),
        Some(found) => Err(Error::config(
            ckpt.path(),
            format!(
                "tensor `{key}` has shape {found:?}, the released {what}'s is {shape:?}: \
                 {GIVE_A_FOLDER}"
            ),
        )),
        None => Err(Error::config(
            ckpt.path(),
            format!("it has no `{key}`, so it is not the released {what}: {GIVE_A_FOLDER}"),
        )),
    }
}

/// The DiT config read off the DiT file `dit` ([`WanConfig::from_checkpoint`]), for a
/// text encoder of width `text_dim`.
pub fn dit_config(dit: &Path, text_dim: usize) -> Result<WanConfig> {
    let cfg = WanConfig::from_checkpoint(&Checkpoint::open(dit)?)?;
    if cfg.text_dim != text_dim {
        return Err(Error::config(
            dit,
            format!(
                "the DiT reads text of width {} (`condition_embedder.text_embedder.linear_1.\
                 weight`), the text encoder gives {text_dim}",
                cfg.text_dim
            ),
        ));
    }
    Ok(cfg)
}

/// The tokenizer inside the text encoder file `text_encoder` (its `spiece_model`).
pub fn tokenizer(text_encoder: &Path) -> Result<Tokenizer> {
    let te = Checkpoint::open(text_encoder)?;
    let model = te
        .embedded(lynx_store::formats::SPIECE_MODEL)
        .ok_or_else(|| Error::MissingFile {
            path: text_encoder.to_path_buf(),
            hint: "its tokenizer (`spiece_model`): give the model folder (--model)".into(),
        })?;
    Tokenizer::from_spiece(&model, text_encoder, MAX_SEQUENCE_LENGTH)
}
