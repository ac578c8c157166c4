//! Key layouts: the names a file stores its tensors under, mapped to the diffusers names
//! the model loaders ask for. Detected from the keys themselves, never the file name.
//!
//! - **Wan DiT, native** (`Wan-AI/Wan2.1-T2V-14B`, ComfyUI, Kijai, city96's GGUF): found by
//!   `head.modulation`; an optional `model.diffusion_model.` prefix is stripped (when
//!   present, only the keys under it are kept, as ComfyUI does).
//! - **Wan VAE, native** (`Wan2.1_VAE.pth`, ComfyUI's `wan_2.1_vae.safetensors`): found by
//!   `decoder.middle.0.residual.0.gamma`; the decoder's flat `upsamples.i` index is split
//!   into up block `b` and resnet `r` with `i = b·(R+2) + r` (resample at `r = R+1`), `R`
//!   read from the first resample's index.
//! - **UMT5 encoder, Wan's own names** (`models_t5_umt5-xxl-enc-bf16.pth` of the original
//!   release): found by `token_embedding.weight` beside `blocks.0.ffn.gate.0.weight`. The
//!   names are those of `T5Encoder` in `Wan-Video/Wan2.1:wan/modules/t5.py` (built with
//!   `encoder_only=True, shared_pos=False` by `umt5_xxl`, so every block carries its own
//!   `pos_embedding`, as UMT5 does, and there is no top-level one); each maps to the
//!   transformers `UMT5EncoderModel` name that module computes the same thing with:
//!   `token_embedding` → `shared`, `blocks.N.norm1` / `attn.{q,k,v,o}` /
//!   `pos_embedding.embedding` → `encoder.block.N.layer.0.{layer_norm, SelfAttention.{q,k,v,o},
//!   SelfAttention.relative_attention_bias}`, `blocks.N.norm2` / `ffn.gate.0` / `ffn.fc1` /
//!   `ffn.fc2` → `encoder.block.N.layer.1.{layer_norm, DenseReluDense.wi_0 / wi_1 / wo}`
//!   (`T5FeedForward` computes `fc1(x) · gelu_tanh(gate(x))`, transformers
//!   `gelu_new(wi_0(x)) · wi_1(x)`), `norm` → `encoder.final_layer_norm`.
//! - Everything else (diffusers, transformers' UMT5) is used as stored.

use std::collections::BTreeMap;

/// The key prefix of Comfy-Org's repacked DiT files.
pub(crate) const COMFY_PREFIX: &str = "model.diffusion_model.";

/// Which layout a set of keys is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Stored under the names the loaders use (diffusers, transformers).
    AsStored,
    /// The Wan DiT in native names (with the prefix stripped if it had one).
    WanDitNative {
        /// Whether the keys carried `model.diffusion_model.`.
        prefixed: bool,
    },
    /// The Wan VAE in native names, with `num_res_blocks` R.
    WanVaeNative {
        /// `num_res_blocks`.
        res_blocks: usize,
    },
    /// The UMT5 encoder in the names of Wan's own `T5Encoder` (`wan/modules/t5.py`).
    WanT5,
}

/// Detects the layout of `keys`.
pub(crate) fn detect<'a>(keys: impl Iterator<Item = &'a str> + Clone) -> Layout {
    let has = |k: &str| keys.clone().any(|x| x == k);
    if has(&format!("{COMFY_PREFIX}head.modulation")) {
        return Layout::WanDitNative { prefixed: true };
    }
    if has("head.modulation") {
        return Layout::WanDitNative { prefixed: false };
    }
    if has("token_embedding.weight") && has("blocks.0.ffn.gate.0.weight") {
        return Layout::WanT5;
    }
    if has("decoder.middle.0.residual.0.gamma") {
        // The first decoder resample sits at index R + 1.
        let first = keys
            .clone()
            .filter_map(|k| k.strip_prefix("decoder.upsamples."))
            .filter(|rest| rest.contains(".resample.") || rest.contains(".time_conv."))
            .filter_map(|rest| rest.split('.').next()?.parse::<usize>().ok())
            .min();
        // Without any resample (a single up block) every upsample is a resnet: R + 1 of them.
        let res_blocks = match first {
            Some(i) => i.saturating_sub(1),
            None => keys
                .clone()
                .filter_map(|k| k.strip_prefix("decoder.upsamples."))
                .filter_map(|rest| rest.split('.').next()?.parse::<usize>().ok())
                .max()
                .unwrap_or(0),
        };
        return Layout::WanVaeNative { res_blocks };
    }
    Layout::AsStored
}

/// The diffusers name of stored key `key` under `layout`; `None` drops the key (keys
/// outside the ComfyUI prefix of a prefixed file).
pub fn rename(layout: Layout, key: &str) -> Option<String> {
    match layout {
        Layout::AsStored => Some(key.to_string()),
        Layout::WanDitNative { prefixed } => {
            let key = if prefixed {
                key.strip_prefix(COMFY_PREFIX)?
            } else {
                key
            };
            Some(dit_key(key))
        }
        Layout::WanVaeNative { res_blocks } => Some(vae_key(key, res_blocks)),
        Layout::WanT5 => Some(t5_key(key)),
    }
}

/// The transformers UMT5 name of a key of Wan's `T5Encoder` (see the module docs).
fn t5_key(key: &str) -> String {
    match key {
        "token_embedding.weight" => return "shared.weight".into(),
        "norm.weight" => return "encoder.final_layer_norm.weight".into(),
        _ => {}
    }
    let Some((n, inner)) = key
        .strip_prefix("blocks.")
        .and_then(|rest| rest.split_once('.'))
    else {
        return key.to_string();
    };
    const BLOCK: [(&str, &str); 9] = [
        ("norm1.", "0.layer_norm."),
        ("attn.q.", "0.SelfAttention.q."),
        ("attn.k.", "0.SelfAttention.k."),
        ("attn.v.", "0.SelfAttention.v."),
        ("attn.o.", "0.SelfAttention.o."),
        (
            "pos_embedding.embedding.",
            "0.SelfAttention.relative_attention_bias.",
        ),
        ("norm2.", "1.layer_norm."),
        ("ffn.gate.0.", "1.DenseReluDense.wi_0."),
        ("ffn.fc1.", "1.DenseReluDense.wi_1."),
    ];
    for (from, to) in BLOCK {
        if let Some(k) = swap(inner, from, to) {
            return format!("encoder.block.{n}.layer.{k}");
        }
    }
    match swap(inner, "ffn.fc2.", "1.DenseReluDense.wo.") {
        Some(k) => format!("encoder.block.{n}.layer.{k}"),
        None => key.to_string(),
    }
}

/// Replaces the first `from` at a component boundary of `key` with `to`.
fn swap(key: &str, from: &str, to: &str) -> Option<String> {
    key.strip_prefix(from).map(|rest| format!("{to}{rest}"))
}

/// The DiT's top-level native prefixes and their diffusers names.
const DIT_TOP: [(&str, &str); 7] = [
    (
        "text_embedding.0.",
        "condition_embedder.text_embedder.linear_1.",
    ),
    (
        "text_embedding.2.",
        "condition_embedder.text_embedder.linear_2.",
    ),
    (
        "time_embedding.0.",
        "condition_embedder.time_embedder.linear_1.",
    ),
    (
        "time_embedding.2.",
        "condition_embedder.time_embedder.linear_2.",
    ),
    ("time_projection.1.", "condition_embedder.time_proj."),
    ("head.head.", "proj_out."),
    ("head.modulation", "scale_shift_table"),
];

/// A block's native prefixes (after `blocks.N.`) and their diffusers names; the more
/// specific of two overlapping prefixes first, both ways.
const DIT_BLOCK: [(&str, &str); 14] = [
    ("self_attn.q.", "attn1.to_q."),
    ("self_attn.k.", "attn1.to_k."),
    ("self_attn.v.", "attn1.to_v."),
    ("self_attn.o.", "attn1.to_out.0."),
    ("self_attn.", "attn1."),
    ("cross_attn.q.", "attn2.to_q."),
    ("cross_attn.k.", "attn2.to_k."),
    ("cross_attn.v.", "attn2.to_v."),
    ("cross_attn.o.", "attn2.to_out.0."),
    ("cross_attn.", "attn2."),
    ("norm3.", "norm2."),
    ("ffn.0.", "ffn.net.0.proj."),
    ("ffn.2.", "ffn.net.2."),
    ("modulation", "scale_shift_table"),
];

/// `key` renamed by the first matching pair of `top` (at the start) or, under
/// `blocks.N.`, of `block`; `native` says which side of each pair is matched.
fn dit_rename(key: &str, native: bool) -> String {
    let pick = |(n, d): &(&'static str, &'static str)| if native { (*n, *d) } else { (*d, *n) };
    for (from, to) in DIT_TOP.iter().map(pick) {
        if let Some(k) = swap(key, from, to) {
            return k;
        }
    }
    let Some(rest) = key.strip_prefix("blocks.") else {
        return key.to_string();
    };
    let Some((n, inner)) = rest.split_once('.') else {
        return key.to_string();
    };
    for (from, to) in DIT_BLOCK.iter().map(pick) {
        if let Some(k) = swap(inner, from, to) {
            return format!("blocks.{n}.{k}");
        }
    }
    key.to_string()
}

fn dit_key(key: &str) -> String {
    dit_rename(key, true)
}

/// The native Wan name (bare, as Kijai's and city96's files store it) of the DiT's
/// diffusers key `key`: the inverse of the native layout's [`rename`], for writing
/// native files.
pub fn dit_native_key(key: &str) -> String {
    dit_rename(key, false)
}

/// A resnet's inner names: `residual.{0,2,3,6}` and `shortcut`.
fn resnet(inner: &str) -> String {
    const NAMES: [(&str, &str); 5] = [
        ("residual.0.", "norm1."),
        ("residual.2.", "conv1."),
        ("residual.3.", "norm2."),
        ("residual.6.", "conv2."),
        ("shortcut.", "conv_shortcut."),
    ];
    for (from, to) in NAMES {
        if let Some(k) = swap(inner, from, to) {
            return k;
        }
    }
    inner.to_string()
}

fn vae_key(key: &str, r: usize) -> String {
    for (from, to) in [("conv1.", "quant_conv."), ("conv2.", "post_quant_conv.")] {
        if let Some(k) = swap(key, from, to) {
            return k;
        }
    }
    let Some((side, rest)) = key.split_once('.') else {
        return key.to_string();
    };
    if side != "encoder" && side != "decoder" {
        return key.to_string();
    }
    let mapped = if let Some(k) = swap(rest, "conv1.", "conv_in.") {
        k
    } else if let Some(k) = swap(rest, "head.0.", "norm_out.") {
        k
    } else if let Some(k) = swap(rest, "head.2.", "conv_out.") {
        k
    } else if let Some(inner) = rest.strip_prefix("middle.0.") {
        format!("mid_block.resnets.0.{}", resnet(inner))
    } else if let Some(inner) = rest.strip_prefix("middle.1.") {
        format!("mid_block.attentions.0.{inner}")
    } else if let Some(inner) = rest.strip_prefix("middle.2.") {
        format!("mid_block.resnets.1.{}", resnet(inner))
    } else if let Some(tail) = rest.strip_prefix("downsamples.") {
        match tail.split_once('.') {
            Some((i, inner)) => format!("down_blocks.{i}.{}", resnet(inner)),
            None => rest.to_string(),
        }
    } else if let Some(tail) = rest.strip_prefix("upsamples.") {
        match tail
            .split_once('.')
            .and_then(|(i, inner)| Some((i.parse::<usize>().ok()?, inner)))
        {
            Some((i, inner)) => {
                let (b, j) = (i / (r + 2), i % (r + 2));
                if j == r + 1 {
                    format!("up_blocks.{b}.upsamplers.0.{inner}")
                } else {
                    format!("up_blocks.{b}.resnets.{j}.{}", resnet(inner))
                }
            }
            None => rest.to_string(),
        }
    } else {
        rest.to_string()
    };
    format!("{side}.{mapped}")
}

/// Renames the keys of `entries` from `layout` to the loaders' names, dropping those
/// [`rename`] drops. Returns the first pair of stored keys that map to the same name.
pub(crate) fn apply<E>(
    layout: Layout,
    entries: BTreeMap<String, E>,
) -> std::result::Result<BTreeMap<String, E>, (String, String)> {
    if layout == Layout::AsStored {
        return Ok(entries);
    }
    let mut out = BTreeMap::new();
    let mut origin: BTreeMap<String, String> = BTreeMap::new();
    for (key, entry) in entries {
        let Some(name) = rename(layout, &key) else {
            continue;
        };
        if let Some(first) = origin.insert(name.clone(), key.clone()) {
            return Err((first, key));
        }
        out.insert(name, entry);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dit_names() {
        let l = Layout::WanDitNative { prefixed: true };
        let r = |k| rename(l, k);
        assert_eq!(
            r("model.diffusion_model.blocks.3.self_attn.o.weight").as_deref(),
            Some("blocks.3.attn1.to_out.0.weight")
        );
        assert_eq!(
            r("model.diffusion_model.blocks.0.cross_attn.norm_k.weight").as_deref(),
            Some("blocks.0.attn2.norm_k.weight")
        );
        assert_eq!(
            r("model.diffusion_model.blocks.0.norm3.bias").as_deref(),
            Some("blocks.0.norm2.bias")
        );
        assert_eq!(
            r("model.diffusion_model.head.modulation").as_deref(),
            Some("scale_shift_table")
        );
        assert_eq!(r("first_stage_model.x"), None);
    }

    #[test]
    fn wan_t5_names() {
        let keys = ["token_embedding.weight", "blocks.0.ffn.gate.0.weight"];
        assert_eq!(detect(keys.iter().copied()), Layout::WanT5);
        let r = |k| rename(Layout::WanT5, k).unwrap();
        assert_eq!(r("token_embedding.weight"), "shared.weight");
        assert_eq!(r("norm.weight"), "encoder.final_layer_norm.weight");
        assert_eq!(
            r("blocks.23.attn.o.weight"),
            "encoder.block.23.layer.0.SelfAttention.o.weight"
        );
        assert_eq!(
            r("blocks.1.pos_embedding.embedding.weight"),
            "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"
        );
        assert_eq!(
            r("blocks.0.norm2.weight"),
            "encoder.block.0.layer.1.layer_norm.weight"
        );
        assert_eq!(
            r("blocks.0.ffn.gate.0.weight"),
            "encoder.block.0.layer.1.DenseReluDense.wi_0.weight"
        );
        assert_eq!(
            r("blocks.0.ffn.fc1.weight"),
            "encoder.block.0.layer.1.DenseReluDense.wi_1.weight"
        );
        assert_eq!(
            r("blocks.0.ffn.fc2.weight"),
            "encoder.block.0.layer.1.DenseReluDense.wo.weight"
        );
        // Unknown names pass through, for the loader to report as unused.
        assert_eq!(r("blocks.0.extra.weight"), "blocks.0.extra.weight");
    }

    #[test]
    fn vae_decoder_index_formula() {
        // R = 2 (the real Wan VAE): diffusers' hard-coded table.
        assert_eq!(
            vae_key("decoder.upsamples.4.shortcut.weight", 2),
            "decoder.up_blocks.1.resnets.0.conv_shortcut.weight"
        );
        assert_eq!(
            vae_key("decoder.upsamples.3.resample.1.bias", 2),
            "decoder.up_blocks.0.upsamplers.0.resample.1.bias"
        );
        // R = 1 (the tiny VAE).
        assert_eq!(
            vae_key("decoder.upsamples.10.residual.6.weight", 1),
            "decoder.up_blocks.3.resnets.1.conv2.weight"
        );
        assert_eq!(vae_key("conv2.bias", 1), "post_quant_conv.bias");
        assert_eq!(vae_key("encoder.head.0.gamma", 1), "encoder.norm_out.gamma");
    }
}
