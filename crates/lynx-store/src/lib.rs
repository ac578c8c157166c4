//! lynx-store: reading checkpoints as users have them: a single `.safetensors`, a sharded set behind a
//! `*.safetensors.index.json`, a PyTorch `.pth`, or a folder holding one of these.
//!
//! [`Checkpoint`] lists keys and shapes from the file headers (nothing is read until a
//! tensor is asked for; safetensors files are memory-mapped), so a 14B model is loaded one
//! tensor at a time and never held twice.
//!
//! Every model is built the same way, through [`Checkpoint::build`] (or [`load_module`],
//! which opens the file first): the device is checked for the dtype, the model's `load`
//! function (beside its type, in its own crate) reads its tensors through a [`Loader`] by
//! the PyTorch attribute names, each read is shape-checked against the header before any
//! byte is read and converted from f32/f16/bf16/f64 to the model's dtype, and every
//! missing, unused and mis-shaped key is reported in one error.
//!
//! Reading converts as it copies and releases the file's pages from the process as it
//! goes (see [`Checkpoint::read_as`]), so loading holds the weights once, never the file
//! beside them. [`Checkpoint::measure`] runs a loader without reading anything: the
//! same checks, and the bytes the module would take. [`LayerStream`] hands a model's
//! blocks out one at a time, read from the checkpoint when needed ([`Offload::Blocks`]).
//!
//! | module | what |
//! |---|---|
//! | [`checkpoint`] | [`Checkpoint`]: safetensors, sharded index, `.pth`; [`Checkpoint::build`], [`Checkpoint::measure`] |
//! | [`formats`] | containers and key layouts told apart by content: GGUF, fp8 and ComfyUI scaled fp8 safetensors, Wan's native DiT/VAE names, Wan's own T5 names |
//! | [`loader`] | [`Loader`]: what a module's `load` reads its tensors through, by PyTorch attribute names; lynx-core's layers (linear, norms) read from a checkpoint |
//! | [`lora`] | [`LoraFile`], [`LoraSet`]: LoRA files (diffusers/PEFT, native Wan/ComfyUI), fused at load or applied on the fly |
//! | [`record`] | [`Checkpoint::recording`]: the tensors a model's loader asks for, without a file |
//! | [`stream`] | [`Offload`], [`LayerStream`]: blocks read one at a time |
//! | [`size_check`] | [`SizeCheck`]: a config's sizes against the weights, before any layer is built |
//! | [`pth`] | PyTorch `.pth` archives (zip, legacy, restricted unpickler) without Python |
//! | [`safetensors_io`] | writing `.safetensors`, streamed, to a temporary file renamed into place |
//! | [`output`] | [`output::StagedPath`]: outputs appear whole or not at all; [`output::check_writable`] |
//!
//! It mirrors what `torch.load`, `safetensors.torch.load_file` and diffusers'
//! `load_state_dict` / `_load_state_dict_into_model` do for the reference, as burn's
//! `burn-store` does for burn modules.

#![warn(missing_docs)]

pub mod checkpoint;
mod entry;
pub mod formats;
pub mod loader;
pub mod lora;
pub mod output;
pub mod pth;
mod read;
pub mod record;
pub mod safetensors_io;
pub mod size_check;
pub mod stream;

pub use checkpoint::{Checkpoint, load_module};
pub use loader::Loader;
pub use lora::{LoraFile, LoraSet};
pub use record::TensorRecord;
pub use size_check::SizeCheck;
pub use stream::{LayerStream, Offload, READ_AHEAD, StreamStats, for_each_layer};
