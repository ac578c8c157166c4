//! LoRA key names: what a stored key says (which module, which part of the delta) and
//! the name of that module in the diffusers layout the models load.
//!
//! A key is `<prefix><module>.<part>`:
//!
//! | prefix (dropped) | written by |
//! |---|---|
//! | `transformer.`, `base_model.model.` | diffusers / PEFT |
//! | `diffusion_model.`, `model.diffusion_model.` | native Wan, ComfyUI, lightx2v |
//! | `lora_unet_` (module names joined by `_`) | kohya-style trainers (musubi-tuner) |
//!
//! | part | [`Part`] |
//! |---|---|
//! | `lora_A.weight`, `lora_A.default.weight`, `lora_down.weight` | [`Part::Down`] `[r, in]` |
//! | `lora_B.weight`, `lora_B.default.weight`, `lora_up.weight` | [`Part::Up`] `[out, r]` |
//! | `alpha` | [`Part::Alpha`] (a scalar) |
//! | `diff_b`, `lora_B.bias`, `lora_B.default.bias` | [`Part::BiasDiff`] (added to `bias`) |
//! | `diff` | [`Part::WeightDiff`] (added to `weight`) |
//! | `diff_m` (after the owner of a `modulation`) | [`Part::WeightDiff`] of that `modulation` |
//!
//! lightx2v's extractor (`tools/extract/lora_extractor.py` in ModelTC/LightX2V) writes a
//! modulation table's delta as `blocks.N.diff_m` (of `blocks.N.modulation`) and
//! `head.diff_m` (of `head.modulation`), as its released step-distillation LoRAs carry
//! them (the keys ComfyUI's issue #8922 lists).
//!
//! Native module names become diffusers ones ([`diffusers_module`]): inside `blocks.N`
//! `self_attn`/`cross_attn` → `attn1`/`attn2`, `q`/`k`/`v`/`o` → `to_q`/`to_k`/`to_v`/
//! `to_out.0`, `ffn.0`/`ffn.2` → `ffn.net.0.proj`/`ffn.net.2`, the norms swap
//! (`norm3` → `norm2`, `norm2` → `norm3`), `modulation` → `scale_shift_table`; outside
//! the blocks `head.head` → `proj_out`, `text_embedding.{0,2}`, `time_embedding.{0,2}`
//! and `time_projection.1` → the `condition_embedder`'s layers. Names already in the
//! diffusers layout pass unchanged. [`native_module`] is the way back, for writers.

/// Which part of a module's delta a key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    /// `lora_down` / `lora_A`: `[r, in]`.
    Down,
    /// `lora_up` / `lora_B`: `[out, r]`.
    Up,
    /// The scalar `alpha` (scale `alpha / r`).
    Alpha,
    /// A bias delta `[out]` (`diff_b`, `lora_B.bias`).
    BiasDiff,
    /// A full weight delta of the weight's shape (`diff`).
    WeightDiff,
}

/// Key prefixes trainers and converters put before the module name, longest first.
const PREFIXES: [&str; 4] = [
    "model.diffusion_model.",
    "diffusion_model.",
    "base_model.model.",
    "transformer.",
];

/// Part suffixes, each with the part it names.
const SUFFIXES: [(&str, Part); 11] = [
    (".lora_A.default.weight", Part::Down),
    (".lora_B.default.weight", Part::Up),
    (".lora_B.default.bias", Part::BiasDiff),
    (".lora_A.weight", Part::Down),
    (".lora_B.weight", Part::Up),
    (".lora_B.bias", Part::BiasDiff),
    (".lora_down.weight", Part::Down),
    (".lora_up.weight", Part::Up),
    (".alpha", Part::Alpha),
    (".diff_b", Part::BiasDiff),
    (".diff", Part::WeightDiff),
];

/// Splits a stored key into its module (prefixes dropped, in the diffusers layout) and
/// its part; `None` for a key that is no part of a LoRA.
pub fn parse_key(key: &str) -> Option<(String, Part)> {
    let modulation;
    let (rest, part) = match key.strip_suffix(".diff_m") {
        Some(owner) => {
            modulation = format!("{owner}.modulation");
            (modulation.as_str(), Part::WeightDiff)
        }
        None => SUFFIXES
            .iter()
            .find_map(|(suffix, part)| key.strip_suffix(suffix).map(|rest| (rest, *part)))?,
    };
    let kohya = rest.strip_prefix("lora_unet_").map(kohya_module);
    let mut module = kohya.as_deref().unwrap_or(rest);
    // `base_model.model.transformer.` and similar stacks: drop prefixes while they match.
    while let Some(stripped) = PREFIXES.iter().find_map(|p| module.strip_prefix(p)) {
        module = stripped;
    }
    if module.is_empty() || module.split('.').any(str::is_empty) {
        return None;
    }
    Some((diffusers_module(module), part))
}

/// Native names joined by `_` in kohya-style keys (musubi-tuner, sd-scripts:
/// `lora_unet_blocks_0_self_attn_q`), longest first.
const KOHYA_WORDS: [&str; 12] = [
    "norm_k_img",
    "self_attn",
    "cross_attn",
    "k_img",
    "v_img",
    "norm_q",
    "norm_k",
    "text_embedding",
    "time_embedding",
    "time_projection",
    "patch_embedding",
    "img_emb",
];

/// A kohya module name (after `lora_unet_`) with its `_` separators back to `.`:
/// `blocks_0_cross_attn_k_img` → `blocks.0.cross_attn.k_img`.
fn kohya_module(name: &str) -> String {
    let tokens: Vec<&str> = name.split('_').collect();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let word = KOHYA_WORDS.iter().find(|w| {
            let n = w.split('_').count();
            i + n <= tokens.len() && tokens[i..i + n].join("_") == **w
        });
        match word {
            Some(w) => {
                parts.push(w.to_string());
                i += w.split('_').count();
            }
            None => {
                parts.push(tokens[i].to_string());
                i += 1;
            }
        }
    }
    parts.join(".")
}

/// The diffusers name of a module given by its native Wan name (or already diffusers).
pub fn diffusers_module(module: &str) -> String {
    if let Some(rest) = module.strip_prefix("blocks.")
        && let Some((index, inner)) = rest.split_once('.')
        && index.bytes().all(|b| b.is_ascii_digit())
    {
        return format!("blocks.{index}.{}", block_module(inner));
    }
    let mapped = match module {
        "head.head" => "proj_out",
        "head.modulation" => "scale_shift_table",
        "text_embedding.0" => "condition_embedder.text_embedder.linear_1",
        "text_embedding.2" => "condition_embedder.text_embedder.linear_2",
        "time_embedding.0" => "condition_embedder.time_embedder.linear_1",
        "time_embedding.2" => "condition_embedder.time_embedder.linear_2",
        "time_projection.1" => "condition_embedder.time_proj",
        "img_emb.proj.0" => "condition_embedder.image_embedder.norm1",
        "img_emb.proj.1" => "condition_embedder.image_embedder.ff.net.0.proj",
        "img_emb.proj.3" => "condition_embedder.image_embedder.ff.net.2",
        "img_emb.proj.4" => "condition_embedder.image_embedder.norm2",
        other => other,
    };
    mapped.to_string()
}

/// The native Wan name of a module given by its diffusers name: the inverse of
/// [`diffusers_module`] (`blocks.0.attn1.to_q` → `blocks.0.self_attn.q`,
/// `condition_embedder.time_proj` → `time_projection.1`, `scale_shift_table` →
/// `head.modulation`). A name with no native counterpart is returned unchanged.
pub fn native_module(module: &str) -> String {
    if let Some(rest) = module.strip_prefix("blocks.")
        && let Some((index, inner)) = rest.split_once('.')
        && index.bytes().all(|b| b.is_ascii_digit())
    {
        let native = match inner {
            "ffn.net.0.proj" => "ffn.0".to_string(),
            "ffn.net.2" => "ffn.2".into(),
            "norm2" => "norm3".into(),
            "norm3" => "norm2".into(),
            "scale_shift_table" => "modulation".into(),
            _ => match inner.split_once('.') {
                Some((attn @ ("attn1" | "attn2"), layer)) => {
                    let attn = if attn == "attn1" {
                        "self_attn"
                    } else {
                        "cross_attn"
                    };
                    let layer = match layer {
                        "to_q" => "q",
                        "to_k" => "k",
                        "to_v" => "v",
                        "to_out.0" => "o",
                        "add_k_proj" => "k_img",
                        "add_v_proj" => "v_img",
                        "norm_added_k" => "norm_k_img",
                        other => other,
                    };
                    format!("{attn}.{layer}")
                }
                _ => inner.to_string(),
            },
        };
        return format!("blocks.{index}.{native}");
    }
    let native = match module {
        "proj_out" => "head.head",
        "scale_shift_table" => "head.modulation",
        "condition_embedder.text_embedder.linear_1" => "text_embedding.0",
        "condition_embedder.text_embedder.linear_2" => "text_embedding.2",
        "condition_embedder.time_embedder.linear_1" => "time_embedding.0",
        "condition_embedder.time_embedder.linear_2" => "time_embedding.2",
        "condition_embedder.time_proj" => "time_projection.1",
        "condition_embedder.image_embedder.norm1" => "img_emb.proj.0",
        "condition_embedder.image_embedder.ff.net.0.proj" => "img_emb.proj.1",
        "condition_embedder.image_embedder.ff.net.2" => "img_emb.proj.3",
        "condition_embedder.image_embedder.norm2" => "img_emb.proj.4",
        other => other,
    };
    native.to_string()
}

/// A module inside `blocks.N`, native names mapped.
fn block_module(inner: &str) -> String {
    let (head, tail) = match inner.split_once('.') {
        Some((h, t)) => (h, Some(t)),
        None => (inner, None),
    };
    match (head, tail) {
        ("self_attn" | "cross_attn", Some(tail)) => {
            let attn = if head == "self_attn" {
                "attn1"
            } else {
                "attn2"
            };
            let layer = match tail {
                "q" => "to_q",
                "k" => "to_k",
                "v" => "to_v",
                "o" => "to_out.0",
                "k_img" => "add_k_proj",
                "v_img" => "add_v_proj",
                "norm_k_img" => "norm_added_k",
                other => other,
            };
            format!("{attn}.{layer}")
        }
        ("ffn", Some("0")) => "ffn.net.0.proj".into(),
        ("ffn", Some("2")) => "ffn.net.2".into(),
        ("norm3", None) => "norm2".into(),
        ("norm2", None) => "norm3".into(),
        ("modulation", None) => "scale_shift_table".into(),
        _ => inner.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(key: &str) -> (String, Part) {
        parse_key(key).unwrap_or_else(|| panic!("`{key}` not parsed"))
    }

    #[test]
    fn peft_keys_with_prefixes() {
        let want = ("blocks.3.attn1.to_q".to_string(), Part::Down);
        assert_eq!(
            parsed("transformer.blocks.3.attn1.to_q.lora_A.weight"),
            want
        );
        assert_eq!(
            parsed("base_model.model.blocks.3.attn1.to_q.lora_A.default.weight"),
            want
        );
        assert_eq!(
            parsed("transformer.blocks.0.attn2.to_out.0.lora_B.weight"),
            ("blocks.0.attn2.to_out.0".into(), Part::Up)
        );
        assert_eq!(
            parsed("transformer.blocks.0.ffn.net.0.proj.lora_B.bias"),
            ("blocks.0.ffn.net.0.proj".into(), Part::BiasDiff)
        );
    }

    #[test]
    fn native_keys_map_to_diffusers() {
        for (native, diffusers, part) in [
            (
                "diffusion_model.blocks.1.self_attn.q.lora_down.weight",
                "blocks.1.attn1.to_q",
                Part::Down,
            ),
            (
                "diffusion_model.blocks.1.cross_attn.o.lora_up.weight",
                "blocks.1.attn2.to_out.0",
                Part::Up,
            ),
            (
                "diffusion_model.blocks.1.ffn.0.alpha",
                "blocks.1.ffn.net.0.proj",
                Part::Alpha,
            ),
            (
                "diffusion_model.blocks.1.ffn.2.diff_b",
                "blocks.1.ffn.net.2",
                Part::BiasDiff,
            ),
            (
                "diffusion_model.blocks.1.norm3.diff",
                "blocks.1.norm2",
                Part::WeightDiff,
            ),
            (
                "diffusion_model.blocks.1.norm3.diff_b",
                "blocks.1.norm2",
                Part::BiasDiff,
            ),
            (
                "diffusion_model.blocks.1.self_attn.norm_q.diff",
                "blocks.1.attn1.norm_q",
                Part::WeightDiff,
            ),
            (
                "diffusion_model.blocks.1.cross_attn.k_img.lora_down.weight",
                "blocks.1.attn2.add_k_proj",
                Part::Down,
            ),
            (
                "diffusion_model.blocks.1.modulation.diff",
                "blocks.1.scale_shift_table",
                Part::WeightDiff,
            ),
            (
                "model.diffusion_model.head.head.lora_up.weight",
                "proj_out",
                Part::Up,
            ),
            (
                "diffusion_model.text_embedding.2.diff_b",
                "condition_embedder.text_embedder.linear_2",
                Part::BiasDiff,
            ),
            (
                "diffusion_model.time_embedding.0.lora_down.weight",
                "condition_embedder.time_embedder.linear_1",
                Part::Down,
            ),
            (
                "diffusion_model.time_projection.1.lora_up.weight",
                "condition_embedder.time_proj",
                Part::Up,
            ),
            (
                "blocks.0.self_attn.v.lora_up.weight",
                "blocks.0.attn1.to_v",
                Part::Up,
            ),
        ] {
            assert_eq!(parsed(native), (diffusers.to_string(), part), "{native}");
        }
    }

    #[test]
    fn modulation_diffs_name_the_tables() {
        assert_eq!(
            parsed("diffusion_model.blocks.7.diff_m"),
            ("blocks.7.scale_shift_table".into(), Part::WeightDiff)
        );
        assert_eq!(
            parsed("diffusion_model.head.diff_m"),
            ("scale_shift_table".into(), Part::WeightDiff)
        );
        assert_eq!(parse_key(".diff_m"), None);
    }

    #[test]
    fn native_names_invert_diffusers_names() {
        for native in [
            "blocks.3.self_attn.q",
            "blocks.3.self_attn.o",
            "blocks.3.cross_attn.k",
            "blocks.3.cross_attn.k_img",
            "blocks.3.cross_attn.norm_k_img",
            "blocks.3.self_attn.norm_q",
            "blocks.3.ffn.0",
            "blocks.3.ffn.2",
            "blocks.3.norm2",
            "blocks.3.norm3",
            "blocks.3.modulation",
            "head.head",
            "head.modulation",
            "text_embedding.0",
            "text_embedding.2",
            "time_embedding.0",
            "time_embedding.2",
            "time_projection.1",
            "img_emb.proj.0",
            "img_emb.proj.1",
            "img_emb.proj.3",
            "img_emb.proj.4",
            "patch_embedding",
        ] {
            let diffusers = diffusers_module(native);
            assert_eq!(native_module(&diffusers), native, "{diffusers}");
        }
    }

    #[test]
    fn kohya_keys_map_to_diffusers() {
        for (kohya, diffusers, part) in [
            (
                "lora_unet_blocks_0_self_attn_q.lora_down.weight",
                "blocks.0.attn1.to_q",
                Part::Down,
            ),
            (
                "lora_unet_blocks_12_cross_attn_o.lora_up.weight",
                "blocks.12.attn2.to_out.0",
                Part::Up,
            ),
            (
                "lora_unet_blocks_3_cross_attn_k_img.alpha",
                "blocks.3.attn2.add_k_proj",
                Part::Alpha,
            ),
            (
                "lora_unet_blocks_3_ffn_2.lora_down.weight",
                "blocks.3.ffn.net.2",
                Part::Down,
            ),
            (
                "lora_unet_blocks_3_self_attn_norm_q.diff",
                "blocks.3.attn1.norm_q",
                Part::WeightDiff,
            ),
            (
                "lora_unet_time_projection_1.lora_up.weight",
                "condition_embedder.time_proj",
                Part::Up,
            ),
            ("lora_unet_head_head.diff_b", "proj_out", Part::BiasDiff),
        ] {
            assert_eq!(parsed(kohya), (diffusers.to_string(), part), "{kohya}");
        }
    }

    #[test]
    fn other_keys_are_not_lora_parts() {
        for key in [
            "blocks.0.attn1.to_q.weight",
            "blocks..to_q.lora_A.weight",
            "",
            ".alpha",
        ] {
            assert_eq!(parse_key(key), None, "{key}");
        }
    }
}
