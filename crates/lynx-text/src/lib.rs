//! Text conditioning for lynx-rs: a prompt becomes the `[1, 512, text_dim]` embedding the
//! Wan2.1 DiT attends to, from the `text_encoder/` (UMT5) and `tokenizer/` folders of a
//! Wan2.1 diffusers checkpoint.
//!
//! | module | mirrors | what |
//! |---|---|---|
//! | [`clean`] | diffusers 0.33.1 `pipelines/wan/pipeline_wan.py` (`prompt_clean`), ftfy 6 `fix_text`, Python `html.unescape` | [`prompt_clean`]: the caller's choice |
//! | [`tokenizer`] | transformers `T5TokenizerFast` as the pipeline calls it | [`Tokenizer`]: `tokenizer.json`, end token, pad/truncate to 512, mask |
//! | [`spiece`] | sentencepiece `sentencepiece_model.proto`, ComfyUI `comfy/text_encoders/spiece_tokenizer.py` | [`Tokenizer::from_spiece`]: the tokenizer inside a ComfyUI UMT5 file (`spiece_model`) |
//! | [`config`] | transformers `models/umt5/configuration_umt5.py` | [`Umt5Config`] from `text_encoder/config.json` |
//! | [`attention`] | transformers 4.50 `models/umt5/modeling_umt5.py` `UMT5Attention` | relative-position buckets and biased attention |
//! | [`ffn`] | `UMT5DenseGatedActDense` | gated GELU(tanh) feed-forward |
//! | [`encoder`] | `UMT5Block`, `UMT5Stack`, `UMT5EncoderModel` | [`Umt5Encoder`] |
//! | [`text_encoder`] | pipeline_wan.py `_get_t5_prompt_embeds` | [`TextEncoder`], [`postprocess`] |
//! | [`cache`] | — | [`EmbeddingCache`] keyed by (prompt, cleaning) |
//!
//! # Shapes
//! - token ids, mask: `[batch, 512]` (`Tensor<2, Int>`; [`Tokens`] holds one row)
//! - encoder output (`last_hidden_state`): `[batch, 512, d_model]` (4096 for umt5-xxl)
//! - [`TextEncoder::encode`]: `[1, 512, d_model]`, the first `mask.sum()` rows from the
//!   encoder, the rest zero
//!
//! # Precision
//! Weights load in f32, f16 or bf16; RMS norms always compute in f32. With f16 weights
//! the residual stream and `wo` stay in f32, as transformers keeps `wo` in f32 for
//! f16 (`_keep_in_fp32_modules`) and its output promotes the stream.
//!
//! # Example
//! ```no_run
//! # fn main() -> lynx_core::Result<()> {
//! use burn::tensor::{DType, Device};
//! let device = Device::flex();
//! let enc = lynx_text::TextEncoder::from_model_dir("Wan2.1-T2V-14B-Diffusers", &device, DType::BF16)?;
//! let prompt = enc.encode("A person carves a pumpkin", true)?; // cleaned, as Wan does
//! let reference = enc.encode("image of a face", false)?; // Lynx: not cleaned
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod attention;
pub mod cache;
pub mod clean;
pub mod config;
pub mod encoder;
pub mod ffn;
pub mod spiece;
pub mod text_encoder;
pub mod tokenizer;
mod tokenizer_check;

pub use cache::EmbeddingCache;
pub use clean::prompt_clean;
pub use config::{Activation, Umt5Config};
pub use encoder::{EncoderInput, Umt5Encoder};
pub use text_encoder::{TextEncoder, postprocess};
pub use tokenizer::{MAX_SEQUENCE_LENGTH, Tokenizer, Tokens};
