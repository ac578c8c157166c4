//! Prompt → `[1, 512, d_model]` embedding, as the Wan pipeline hands it to the DiT
//! (diffusers 0.33.1 `pipelines/wan/pipeline_wan.py`, `_get_t5_prompt_embeds`).

use std::path::{Path, PathBuf};

use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use lynx_core::{Error, Result, load_module};

use crate::cache::EmbeddingCache;
use crate::clean::prompt_clean;
use crate::config::Umt5Config;
use crate::encoder::Umt5Encoder;
use crate::tokenizer::{Tokenizer, Tokens};

/// Tokenizer, UMT5 encoder and an [`EmbeddingCache`].
#[derive(Debug)]
pub struct TextEncoder {
    tokenizer: Tokenizer,
    model: Umt5Encoder,
    config: Umt5Config,
    device: Device,
    cache: EmbeddingCache,
}

impl TextEncoder {
    /// Loads the encoder from `text_encoder` (a Wan diffusers folder or its
    /// `text_encoder/` folder: `config.json` plus one safetensors file or a sharded set
    /// with its `*.safetensors.index.json`) and the tokenizer from `tokenizer` (the
    /// model folder, its `tokenizer/` folder or the `tokenizer.json` file), with
    /// weights in `dtype` (f32, f16 or bf16) on `device`.
    ///
    /// Weights are read one tensor at a time from memory-mapped files, so the 11 GB
    /// bf16 encoder of Wan2.1-14B is never held twice.
    pub fn from_pretrained(
        text_encoder: impl AsRef<Path>,
        tokenizer: impl AsRef<Path>,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let dir = resolve_text_encoder_dir(text_encoder.as_ref());
        let config = Umt5Config::load(dir.join("config.json"))?;
        let tokenizer = Tokenizer::from_pretrained(tokenizer)?;
        let model = load_module(&dir, device, dtype, |w| Umt5Encoder::load(w, &config))?;
        Ok(Self::new(tokenizer, model, config, device))
    }

    /// [`TextEncoder::from_pretrained`] with both parts from one Wan diffusers folder.
    pub fn from_model_dir(dir: impl AsRef<Path>, device: &Device, dtype: DType) -> Result<Self> {
        Self::from_pretrained(dir.as_ref(), dir.as_ref(), device, dtype)
    }

    /// Assembles an encoder from parts.
    pub fn new(
        tokenizer: Tokenizer,
        model: Umt5Encoder,
        config: Umt5Config,
        device: &Device,
    ) -> Self {
        Self {
            tokenizer,
            model,
            config,
            device: device.clone(),
            cache: EmbeddingCache::new(),
        }
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The UMT5 encoder.
    pub fn model(&self) -> &Umt5Encoder {
        &self.model
    }

    /// The encoder's config.
    pub fn config(&self) -> &Umt5Config {
        &self.config
    }

    /// The device the encoder runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The weight dtype, which is also the dtype of the embeddings.
    pub fn dtype(&self) -> DType {
        self.model.dtype()
    }

    /// The embeddings computed so far.
    pub fn cache(&self) -> &EmbeddingCache {
        &self.cache
    }

    /// Tokenizes `prompt` as given (see [`crate::prompt_clean`] for cleaning).
    pub fn tokenize(&self, prompt: &str) -> Result<Tokens> {
        self.tokenizer.tokenize(prompt)
    }

    /// The encoder's last hidden state for `ids` with attention `mask` (1 = token),
    /// padded rows included, as transformers returns it.
    ///
    /// # Shapes
    /// - `ids`, `mask`: `[batch, seq]`; output: `[batch, seq, d_model]`
    pub fn forward(&self, ids: Tensor<2, Int>, mask: Option<Tensor<2, Int>>) -> Tensor<3> {
        self.model.forward(ids, mask)
    }

    /// The embedding of `prompt`, cleaned first when `clean` is set, as the DiT takes
    /// it: `[1, max_len, d_model]` (512 rows), the tokens' rows followed by zeros.
    /// Remembered per `(prompt, clean)`; see [`TextEncoder::encode_uncached`].
    pub fn encode(&self, prompt: &str, clean: bool) -> Result<Tensor<3>> {
        self.cache
            .get_or_try_insert(prompt, clean, || self.encode_uncached(prompt, clean))
    }

    /// [`TextEncoder::encode`] without the cache.
    ///
    /// Only the prompt's tokens go through the encoder: the reference runs all 512
    /// positions, but padded keys are masked out of every attention and padded rows
    /// are zeroed afterwards, so they cannot change the result.
    pub fn encode_uncached(&self, prompt: &str, clean: bool) -> Result<Tensor<3>> {
        let text = if clean {
            prompt_clean(prompt)
        } else {
            prompt.to_string()
        };
        let tokens = self.tokenizer.tokenize(&text)?;
        let ids: Vec<i64> = tokens.ids[..tokens.len]
            .iter()
            .map(|&v| i64::from(v))
            .collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, tokens.len]), &self.device);
        let hidden = self.model.forward(ids, None);
        Ok(pad_rows(hidden, self.tokenizer.max_len()))
    }
}

/// The pipeline's post-processing of a last hidden state: for each batch row `b`, keep
/// the first `lens[b]` rows (the mask sum) and set the others to zero.
///
/// # Shapes
/// - `hidden`, output: `[batch, seq, d_model]`; `lens`: `[batch]`
pub fn postprocess(hidden: Tensor<3>, lens: &[usize]) -> Result<Tensor<3>> {
    let [batch, seq, _] = hidden.dims();
    if lens.len() != batch || lens.iter().any(|&l| l > seq) {
        return Err(Error::input(format!(
            "postprocess: {} lengths {lens:?} for a batch of {batch} sequences of {seq}",
            lens.len()
        )));
    }
    let rows = lens
        .iter()
        .enumerate()
        .map(|(b, &len)| {
            let row = hidden.clone().narrow(0, b, 1);
            if len == 0 {
                row.zeros_like()
            } else {
                pad_rows(row.narrow(1, 0, len), seq)
            }
        })
        .collect();
    Ok(Tensor::cat(rows, 0))
}

/// Appends zero rows to `[batch, n, d]` up to `[batch, seq, d]`.
fn pad_rows(x: Tensor<3>, seq: usize) -> Tensor<3> {
    let [batch, n, d] = x.dims();
    if n >= seq {
        return x;
    }
    let zeros = Tensor::zeros([batch, seq - n, d], (&x.device(), x.dtype()));
    Tensor::cat(vec![x, zeros], 1)
}

/// The folder holding the encoder's `config.json`: `path` or its `text_encoder/`.
fn resolve_text_encoder_dir(path: &Path) -> PathBuf {
    let sub = path.join("text_encoder");
    if !path.join("config.json").exists() && sub.is_dir() {
        sub
    } else {
        path.to_path_buf()
    }
}
