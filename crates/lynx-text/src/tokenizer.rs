//! The UMT5 tokenizer from `tokenizer/tokenizer.json`, with the padding and truncation
//! the Wan pipeline asks of transformers' `T5TokenizerFast`
//! (`padding="max_length", max_length=512, truncation=True, add_special_tokens=True`).

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use lynx_core::{Error, Result};
use tokenizers::tokenizer::PostProcessor;
use tokenizers::{Encoding, TruncationDirection};

/// The sequence length the Wan pipeline pads and truncates to (`max_sequence_length`).
pub const MAX_SEQUENCE_LENGTH: usize = 512;

/// Token ids of one prompt, padded to a fixed length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// `[max_len]`: the prompt's tokens, the end-of-sequence token, then padding.
    pub ids: Vec<u32>,
    /// `[max_len]`: 1 for the prompt's tokens and the end-of-sequence token, 0 for padding.
    pub mask: Vec<u32>,
    /// Number of ones in `mask`.
    pub len: usize,
    /// The token count (with special tokens) before truncation, when it was cut.
    pub truncated_from: Option<usize>,
}

impl Tokens {
    /// `ids` as a `[1, max_len]` integer tensor.
    pub fn ids_tensor(&self, device: &Device) -> Tensor<2, Int> {
        int_row(&self.ids, device)
    }

    /// `mask` as a `[1, max_len]` integer tensor.
    pub fn mask_tensor(&self, device: &Device) -> Tensor<2, Int> {
        int_row(&self.mask, device)
    }
}

fn int_row(values: &[u32], device: &Device) -> Tensor<2, Int> {
    let data: Vec<i64> = values.iter().map(|&v| i64::from(v)).collect();
    Tensor::from_data(TensorData::new(data, [1, values.len()]), device)
}

/// A `tokenizers` tokenizer with fixed-length padding and truncation.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    max_len: usize,
    pad_id: u32,
    /// Special tokens the post-processor adds to one sequence (T5: `</s>`).
    n_special: usize,
}

impl Tokenizer {
    /// Loads `tokenizer.json` from `path`: the file itself, the `tokenizer/` folder of
    /// a model, or the model folder holding `tokenizer/`. Pads and truncates to
    /// [`MAX_SEQUENCE_LENGTH`].
    pub fn from_pretrained(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_file(resolve_tokenizer_file(path.as_ref()), MAX_SEQUENCE_LENGTH)
    }

    /// Loads the `tokenizer.json` at `path`, padding and truncating to `max_len`.
    pub fn from_file(path: impl AsRef<Path>, max_len: usize) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::MissingFile {
                path: path.to_path_buf(),
                hint:
                    "a Wan2.1 diffusers folder has the UMT5 tokenizer as tokenizer/tokenizer.json"
                        .into(),
            },
            _ => Error::io(path, e),
        })?;
        Self::from_json(&bytes, path, "tokenizer.json", max_len)
    }

    /// The tokenizer of a SentencePiece model's bytes (`spiece.model`, or the
    /// `spiece_model` tensor of a ComfyUI UMT5 file: see [`crate::spiece`]), encoding as
    /// SentencePiece does and appending `</s>`; `origin` names the file in errors.
    pub fn from_spiece(model: &[u8], origin: impl AsRef<Path>, max_len: usize) -> Result<Self> {
        let origin = origin.as_ref();
        let bad = |e: String| Error::format(origin, "spiece_model", e);
        let json =
            crate::spiece::tokenizer_json(&crate::spiece::SpieceModel::parse(model).map_err(bad)?)
                .map_err(bad)?;
        let bytes = serde_json::to_vec(&json).map_err(|e| bad(e.to_string()))?;
        Self::from_json(&bytes, origin, "spiece_model", max_len)
    }

    /// A tokenizer from `tokenizer.json` bytes (`what` of the file at `path`).
    fn from_json(bytes: &[u8], path: &Path, what: &'static str, max_len: usize) -> Result<Self> {
        let bad = |e: &dyn std::fmt::Display| Error::format(path, what, e);
        // What the `tokenizers` crate would panic on is refused here first.
        let json: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| bad(&e))?;
        crate::tokenizer_check::check(&json).map_err(|e| bad(&e))?;
        drop(json);
        let mut inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| bad(&e))?;
        // Padding and truncation are applied here, the same way whatever the file says.
        inner.with_truncation(None).map_err(|e| bad(&e))?;
        inner.with_padding(None);
        let pad_id = inner
            .token_to_id("<pad>")
            .ok_or_else(|| bad(&"its vocabulary has no `<pad>` token"))?;
        let n_special = inner
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(false));
        if max_len <= n_special {
            return Err(Error::input(format!(
                "max_len {max_len} leaves no room beside {n_special} special token(s)"
            )));
        }
        Ok(Self {
            inner,
            path: path.to_path_buf(),
            max_len,
            pad_id,
            n_special,
        })
    }

    /// The file this tokenizer was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The padded length of [`Tokens`].
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The id of `<pad>`.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Tokenizes `text` (not cleaned here) with the end-of-sequence token, keeping at
    /// most `max_len` tokens (the end token included) and padding to `max_len`.
    /// A longer prompt is cut with a `log` warning, as transformers does silently.
    pub fn tokenize(&self, text: &str) -> Result<Tokens> {
        let mut encoding = self.encode(text, false)?;
        let budget = self.max_len - self.n_special;
        let mut truncated_from = None;
        if encoding.len() > budget {
            let total = encoding.len() + self.n_special;
            log::warn!(
                "prompt has {total} tokens; only the first {} are kept (with the end token, \
                 {} in all); it starts {:?}",
                budget,
                self.max_len,
                text.chars().take(60).collect::<String>()
            );
            encoding.truncate(budget, 0, TruncationDirection::Right);
            // Overflow pieces would be post-processed too; they are not used.
            drop(encoding.take_overflowing());
            truncated_from = Some(total);
        }
        let encoding = self
            .inner
            .post_process(encoding, None, true)
            .map_err(|e| self.error(e))?;
        let len = encoding.len();
        let mut ids = encoding.get_ids().to_vec();
        let mut mask: Vec<u32> = encoding.get_attention_mask().to_vec();
        ids.resize(self.max_len, self.pad_id);
        mask.resize(self.max_len, 0);
        Ok(Tokens {
            ids,
            mask,
            len,
            truncated_from,
        })
    }

    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Encoding> {
        self.inner
            .encode(text, add_special_tokens)
            .map_err(|e| self.error(e))
    }

    fn error(&self, e: tokenizers::Error) -> Error {
        Error::input(format!("tokenizing with {}: {e}", self.path.display()))
    }
}

/// `tokenizer.json` for a path naming the file, its folder, or a model folder.
fn resolve_tokenizer_file(path: &Path) -> PathBuf {
    if !path.is_dir() {
        return path.to_path_buf();
    }
    let sub = path.join("tokenizer");
    if !path.join("tokenizer.json").exists() && sub.is_dir() {
        sub.join("tokenizer.json")
    } else {
        path.join("tokenizer.json")
    }
}
