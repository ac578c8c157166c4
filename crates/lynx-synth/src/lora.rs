//! A synthetic LoRA for the DiT in the layout of the step-distillation LoRAs users fetch
//! for the fast path (lightx2v's `Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank64`
//! and its siblings): native Wan / ComfyUI key names under `diffusion_model.`.
//!
//! Nothing here lists a layer: the tensors are the DiT's records ([`walk::dit`]: what
//! [`lynx_dit::WanTransformer::load`] reads, in the diffusers layout), each turned into
//! the LoRA parts a full-model extraction writes for it, under its native name
//! ([`native_module`], the inverse of the names LoRA loading maps):
//!
//! | DiT record | LoRA keys (after `diffusion_model.<native module>`) |
//! |---|---|
//! | a linear layer's `weight` `[out, in]` (rank 2) | `.lora_down.weight` `[r, in]`, `.lora_up.weight` `[out, r]`, `.alpha` `[]` = r |
//! | a linear layer's or a norm's `bias` `[out]` | `.diff_b` `[out]` |
//! | a norm's gain `weight` `[dim]` (rank 1) | `.diff` `[dim]` |
//! | a modulation table (`blocks.N.modulation`, `head.modulation`) | `blocks.N.diff_m`, `head.diff_m` (the table's shape) |
//! | the patch embedding (a convolution) | nothing |
//!
//! with `r = min(rank, out, in)`. Which key family comes from where:
//! - `lora_down`/`lora_up` for every 2-D weight and `diff_b` for every bias: ComfyUI's LoRA
//!   extraction (`comfy_extras/nodes_lora_extract.py`, `LoraSave` with `bias_diff`), and
//!   lightx2v's (`tools/extract/lora_extractor.py` in ModelTC/LightX2V), both writing
//!   `diffusion_model.<native key>`; this covers, in every block, `self_attn` and
//!   `cross_attn` `q`/`k`/`v`/`o`, `ffn.0`, `ffn.2`, and outside the blocks `head.head`,
//!   `text_embedding.0`/`.2`, `time_embedding.0`/`.2`, `time_projection.1` (the native
//!   module names ComfyUI-WanVideoWrapper's `standardize_lora_key_format` maps other
//!   layouts to);
//! - `diff` for 1-D weights (the `norm3` gain and the attention `norm_q`/`norm_k`): the
//!   same two extractors (a weight of fewer than 2 axes is stored whole);
//! - `diff_m` for the modulation tables: lightx2v's extractor; the released lightx2v LoRAs
//!   carry `diffusion_model.blocks.N.diff_m` (ComfyUI issue #8922, WanVideoWrapper #807);
//! - `.alpha`: what trainers' native files carry next to each pair (WanVideoWrapper
//!   issue #869 lists `….self_attn.k.alpha`); written as `r`, i.e. scale 1 — the scale of
//!   the extractors' files, which have no alpha.
//!
//! (lightx2v's extractor stores layers of fewer than 10⁶ weights whole as `diff` instead of
//! a pair; here every linear layer gets a pair, so the tiny model's file has the same
//! families as the 14B's.) The values are noise sized so that `up @ down` changes a weight
//! by a few percent; the file is for loading, memory and speed, not for pictures.

use std::collections::BTreeMap;

use burn::tensor::DType;
use lynx_core::Result;
use lynx_dit::WanConfig;
use lynx_store::TensorRecord;
use lynx_store::lora::keys::native_module;

use crate::fill::Init;
use crate::walk::{self, Param, weight_std};

/// The prefix of every key (native Wan / ComfyUI files).
pub const PREFIX: &str = "diffusion_model.";

/// The tensors of a rank-`rank` LoRA for the DiT of config `c`, in the DiT's state-dict
/// order (see the module docs).
pub fn dit_lora(c: &WanConfig, rank: usize) -> Result<Vec<Param>> {
    let records = walk::dit(c)?;
    let shapes: BTreeMap<&str, &[usize]> = records.iter().map(|p| (p.key(), p.shape())).collect();
    let mut out = Vec::new();
    let mut push = |key: String, shape: Vec<usize>, init: Init| {
        out.push(Param {
            record: TensorRecord {
                key,
                shape,
                dtype: DType::F32,
            },
            init,
        })
    };
    let small = Init::Normal(0.01);
    for p in &records {
        let (module, name) = match p.key().rsplit_once('.') {
            Some((m, n)) => (m, n),
            None => ("", p.key()),
        };
        let shape = p.shape().to_vec();
        if name == "scale_shift_table" {
            // `blocks.N.modulation` → `blocks.N.diff_m`; `head.modulation` → `head.diff_m`.
            let native = native_module(p.key());
            let owner = native.strip_suffix(".modulation").unwrap_or(&native);
            push(format!("{PREFIX}{owner}.diff_m"), shape, small);
            continue;
        }
        let native = format!("{PREFIX}{}", native_module(module));
        let weight = shapes.get(format!("{module}.weight").as_str()).copied();
        match (name, shape.as_slice()) {
            ("weight", &[d_out, d_in]) => {
                let r = rank.min(d_out).min(d_in).max(1);
                push(
                    format!("{native}.lora_down.weight"),
                    vec![r, d_in],
                    Init::Normal(weight_std(d_in)),
                );
                push(
                    format!("{native}.lora_up.weight"),
                    vec![d_out, r],
                    Init::Normal(0.1 * weight_std(r)),
                );
                push(format!("{native}.alpha"), vec![], Init::Const(r as f32));
            }
            ("weight", &[_]) => push(format!("{native}.diff"), shape, small),
            ("bias", _) if weight.is_some_and(|w| w.len() <= 2) => {
                push(format!("{native}.diff_b"), shape, small)
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The file name of a rank-`rank` LoRA for the Wan folder `wan_folder`
/// (`Wan2.1-T2V-14B-Diffusers` → `Wan2.1-T2V-14B-synthetic-lora-rank64.safetensors`).
pub fn file_name(wan_folder: &str, rank: usize) -> String {
    let model = wan_folder.strip_suffix("-Diffusers").unwrap_or(wan_folder);
    format!("{model}-synthetic-lora-rank{rank}.safetensors")
}
