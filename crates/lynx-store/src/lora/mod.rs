//! LoRA files as users have them, and what they add to a model's weights.
//!
//! [`LoraFile::open`] reads a file's keys ([`keys`]: diffusers/PEFT `lora_A`/`lora_B`
//! with alpha from the header's `lora_adapter_metadata` ([`metadata`]), native Wan /
//! ComfyUI `lora_down`/`lora_up`/`.alpha`, `diff_b`, `diff`) and names every module in
//! the diffusers layout the models load. A [`LoraSet`] holds one or more files with
//! their strengths, keyed by the model tensor each term changes:
//!
//! ```text
//! weight += strength · (alpha / rank) · up @ down     rank = rows of down; no alpha: alpha/rank = 1
//! bias   += strength · diff_b
//! weight += strength · diff
//! ```
//!
//! (ComfyUI's `comfy/lora.py`; PEFT's `lora.Linear` gives the same with `lora_A` =
//! `down`, `lora_B` = `up`.) Several files add. Two ways to apply a set, with the same
//! numbers:
//! - fused at load: [`Checkpoint::set_loras`](crate::Checkpoint::set_loras) — every read of a changed tensor through
//!   the [`Loader`](crate::Loader) adds the set's delta in f32 before the conversion to
//!   the run dtype, resident or streamed block by block;
//! - on the fly: [`LoraSet::low_rank`] and [`LoraSet::full_delta`] hand a model the
//!   terms to add per call (`lynx_core::nn::linear_with`), so LoRAs can change between
//!   requests without reloading the weights.
//!
//! A key the model has no place for is an error listing every such key
//! ([`LoraSet::check`]) unless the set skips unmatched keys; a delta of another shape
//! than the model's tensor (a LoRA for another model) is always an error naming the key
//! and both shapes.

mod file;
pub mod keys;
pub mod metadata;
mod set;

pub use file::{LoraFile, LowRankKeys, ModuleDelta};
pub use set::LoraSet;
