//! The containers and key layouts a checkpoint may come in, recognised from the file's
//! content (magic bytes, header dtypes, key names), never its name:
//!
//! | container | recognised by |
//! |---|---|
//! | safetensors (f32/f16/bf16, fp8 `F8_E4M3`/`F8_E5M2`, ComfyUI scaled fp8) | an 8-byte header length followed by `{` |
//! | a `*.safetensors.index.json` shard index | JSON (`{`) |
//! | GGUF v2/v3 (`gguf`) | `GGUF` |
//! | PyTorch `.pth` (zip or legacy) | `PK\x03\x04` or a pickle's `\x80` |
//!
//! ComfyUI's scaled fp8 (`scaled`): `<layer>.scale_weight` (or `.weight_scale`) is
//! folded into `<layer>.weight` (value = stored × scale, in f32); the `scaled_fp8` marker,
//! `.scale_input`/`.input_scale` and `.comfy_quant` are consumed; an embedded
//! `spiece_model` is kept aside ([`crate::Checkpoint::embedded`]). Then the key layout
//! ([`layout`]) is detected and renamed to the diffusers names the loaders ask for.

mod containers;
pub(crate) mod gguf;
pub mod layout;
mod scaled;

pub use layout::Layout;

/// The name ComfyUI's UMT5 files store their SentencePiece tokenizer model under (a
/// `uint8` tensor that is not a weight; [`crate::Checkpoint::embedded`] reads it).
pub const SPIECE_MODEL: &str = "spiece_model";

pub(crate) use containers::open;
