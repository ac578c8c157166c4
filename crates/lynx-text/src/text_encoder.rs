//! Prompt → `[1, 512, d_model]` embedding, as the Wan pipeline hands it to the DiT
//! (diffusers 0.33.1 `pipelines/wan/pipeline_wan.py`, `_get_t5_prompt_embeds`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use lynx_core::{Error, Result};
use lynx_store::{Checkpoint, Offload, load_module};

use crate::cache::EmbeddingCache;
use crate::clean::prompt_clean;
use crate::config::Umt5Config;
use crate::encoder::{EncoderInput, Umt5Encoder};
use crate::tokenizer::{Tokenizer, Tokens};

/// Tokenizer, UMT5 encoder and an [`EmbeddingCache`].
///
/// Where the encoder's weights live is chosen at loading
/// ([`TextEncoder::from_pretrained_offloaded`]):
///
/// | [`Offload`] | weights |
/// |---|---|
/// | `None` | on the device from loading on |
/// | `Model` | loaded by each [`TextEncoder::encode_all`] that misses the cache, dropped when it returns |
/// | `Blocks` | in the memory-mapped checkpoint: each forward reads its tokens' embedding rows and the layers one at a time |
///
/// The embeddings are the same in every case, and the cache keeps them whatever the
/// weights do, so a pipeline encodes its prompts once and then holds only those.
#[derive(Debug)]
pub struct TextEncoder {
    tokenizer: Tokenizer,
    weights: Weights,
    config: Umt5Config,
    device: Device,
    dtype: DType,
    cache: EmbeddingCache,
}

/// Where the encoder's weights are.
#[derive(Debug)]
enum Weights {
    /// On the device (resident, or streamed: only the final norm on the device).
    Loaded(Box<Umt5Encoder>),
    /// In the checkpoint folder, loaded whole for each batch of prompts.
    OnDemand(PathBuf),
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
        Self::from_pretrained_offloaded(text_encoder, tokenizer, device, dtype, Offload::None)
    }

    /// [`TextEncoder::from_pretrained`] with the weights kept where `offload` says (see
    /// the type's docs). Every key and shape is checked now in every case.
    pub fn from_pretrained_offloaded(
        text_encoder: impl AsRef<Path>,
        tokenizer: impl AsRef<Path>,
        device: &Device,
        dtype: DType,
        offload: Offload,
    ) -> Result<Self> {
        let dir = resolve_text_encoder_dir(text_encoder.as_ref());
        Self::from_weights(
            dir.join("config.json"),
            &dir,
            tokenizer,
            device,
            dtype,
            offload,
        )
    }

    /// The encoder of `config` (a `config.json`) with the weights of `weights` — any
    /// checkpoint [`Checkpoint::open`] reads: the diffusers files, or a single file such
    /// as ComfyUI's scaled fp8 UMT5 (its Linear weights stay encoded) — and the
    /// tokenizer of `tokenizer`, kept where `offload` says.
    pub fn from_weights(
        config: impl AsRef<Path>,
        weights: impl AsRef<Path>,
        tokenizer: impl AsRef<Path>,
        device: &Device,
        dtype: DType,
        offload: Offload,
    ) -> Result<Self> {
        let config = Umt5Config::load(config)?;
        let tokenizer = Tokenizer::from_pretrained(tokenizer)?;
        Self::from_config(config, weights, tokenizer, device, dtype, offload)
    }

    /// [`TextEncoder::from_weights`] with the config and the tokenizer given: for folders
    /// that do not hold a `config.json` (the original Wan release, whose encoder is the
    /// released UMT5-XXL).
    pub fn from_config(
        config: Umt5Config,
        weights: impl AsRef<Path>,
        tokenizer: Tokenizer,
        device: &Device,
        dtype: DType,
        offload: Offload,
    ) -> Result<Self> {
        let dir = weights.as_ref().to_path_buf();
        let weights = match offload {
            Offload::None => Weights::Loaded(Box::new(load_module(&dir, device, dtype, |w| {
                Umt5Encoder::load(w, &config)
            })?)),
            Offload::Model => {
                Checkpoint::open(&dir)?
                    .measure(device, dtype, |w| Umt5Encoder::load(w, &config))?;
                Weights::OnDemand(dir)
            }
            Offload::Blocks => {
                let ckpt = Arc::new(Checkpoint::open(&dir)?);
                Weights::Loaded(Box::new(ckpt.build(device, dtype, |w| {
                    Umt5Encoder::load_streamed(w, &config, ckpt.clone())
                })?))
            }
        };
        Ok(Self {
            tokenizer,
            weights,
            config,
            device: device.clone(),
            dtype,
            cache: EmbeddingCache::new(),
        })
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
            dtype: model.dtype(),
            weights: Weights::Loaded(Box::new(model)),
            config,
            device: device.clone(),
            cache: EmbeddingCache::new(),
        }
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The UMT5 encoder, unless it is loaded only while encoding ([`Offload::Model`]).
    pub fn model(&self) -> Option<&Umt5Encoder> {
        match &self.weights {
            Weights::Loaded(m) => Some(m.as_ref()),
            Weights::OnDemand(_) => None,
        }
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
        self.dtype
    }

    /// The embeddings computed so far.
    pub fn cache(&self) -> &EmbeddingCache {
        &self.cache
    }

    /// Tokenizes `prompt` as given (see [`crate::prompt_clean`] for cleaning).
    pub fn tokenize(&self, prompt: &str) -> Result<Tokens> {
        self.tokenizer.tokenize(prompt)
    }

    /// Runs `f` with the encoder: the loaded one, or one loaded for the call and dropped
    /// after it.
    fn with_model<R>(&self, f: impl FnOnce(&Umt5Encoder) -> Result<R>) -> Result<R> {
        match &self.weights {
            Weights::Loaded(m) => f(m),
            Weights::OnDemand(dir) => {
                let model = load_module(dir, &self.device, self.dtype, |w| {
                    Umt5Encoder::load(w, &self.config)
                })?;
                let out = f(&model);
                drop(model);
                self.device.memory_cleanup();
                out
            }
        }
    }

    /// The encoder's last hidden state for `ids` with attention `mask` (1 = token),
    /// padded rows included, as transformers returns it.
    ///
    /// # Shapes
    /// - `ids`, `mask`: `[batch, seq]`; output: `[batch, seq, d_model]`
    pub fn forward(&self, ids: Tensor<2, Int>, mask: Option<Tensor<2, Int>>) -> Result<Tensor<3>> {
        self.with_model(|m| m.forward(ids, mask))
    }

    /// The embedding of `prompt`, cleaned first when `clean` is set, as the DiT takes
    /// it: `[1, max_len, d_model]` (512 rows), the tokens' rows followed by zeros.
    /// Remembered per `(prompt, clean)`; see [`TextEncoder::encode_uncached`].
    pub fn encode(&self, prompt: &str, clean: bool) -> Result<Tensor<3>> {
        let mut out = self.encode_all(&[(prompt, clean)])?;
        out.pop()
            .ok_or_else(|| Error::input("the text encoder returned nothing for its one prompt"))
    }

    /// [`TextEncoder::encode`] for several `(prompt, clean)` pairs at once: those not in
    /// the cache go through the encoder together (weights loaded or streamed once for
    /// all of them), then all come from the cache.
    pub fn encode_all(&self, prompts: &[(&str, bool)]) -> Result<Vec<Tensor<3>>> {
        let mut tokenized = Vec::with_capacity(prompts.len());
        for &(p, c) in prompts {
            let tokens = if self.cache.get(p, c).is_some() {
                None
            } else {
                Some(self.tokenize_for(p, c)?)
            };
            tokenized.push((p, c, tokens));
        }
        let refs: Vec<(&str, bool, Option<&Tokens>)> = tokenized
            .iter()
            .map(|(p, c, t)| (*p, *c, t.as_ref()))
            .collect();
        self.encode_tokenized(&refs)
    }

    /// [`TextEncoder::encode_all`] for prompts already tokenized (as a caller that sized
    /// the run from the token counts has them): `(prompt, clean, tokens)` with the
    /// tokens of the prompt as [`TextEncoder::encode`] would make them (cleaned when
    /// `clean`); the embeddings are cached under `(prompt, clean)`. Tokens may be
    /// `None` for a prompt already in the cache; one that is not is tokenized here.
    pub fn encode_tokenized(
        &self,
        prompts: &[(&str, bool, Option<&Tokens>)],
    ) -> Result<Vec<Tensor<3>>> {
        let mut missing: Vec<(&str, bool)> = Vec::new();
        let mut inputs: Vec<EncoderInput> = Vec::new();
        for &(p, c, tokens) in prompts {
            if self.cache.get(p, c).is_some() || missing.contains(&(p, c)) {
                continue;
            }
            let owned;
            let tokens = match tokens {
                Some(t) => t,
                None => {
                    owned = self.tokenize_for(p, c)?;
                    &owned
                }
            };
            missing.push((p, c));
            inputs.push((self.ids(tokens), None));
        }
        if !missing.is_empty() {
            let hidden = self.with_model(|m| m.forward_many(&inputs))?;
            let max_len = self.tokenizer.max_len();
            for (&(p, c), h) in missing.iter().zip(hidden) {
                self.cache
                    .get_or_try_insert(p, c, || Ok(pad_rows(h, max_len)))?;
            }
        }
        prompts
            .iter()
            .map(|&(p, c, _)| {
                self.cache
                    .get(p, c)
                    .ok_or_else(|| Error::input(format!("the embedding of `{p}` was not kept")))
            })
            .collect()
    }

    /// The tokens of `prompt` as the encoder takes it: cleaned first when `clean` is set
    /// ([`crate::prompt_clean`]), as the Wan pipeline does for its prompts.
    pub fn tokenize_for(&self, prompt: &str, clean: bool) -> Result<Tokens> {
        if clean {
            self.tokenizer.tokenize(&prompt_clean(prompt))
        } else {
            self.tokenizer.tokenize(prompt)
        }
    }

    /// The ids of `tokens` without padding, `[1, len]`.
    fn ids(&self, tokens: &Tokens) -> Tensor<2, Int> {
        let ids: Vec<i64> = tokens.ids[..tokens.len]
            .iter()
            .map(|&v| i64::from(v))
            .collect();
        Tensor::<2, Int>::from_data(TensorData::new(ids, [1, tokens.len]), &self.device)
    }

    /// [`TextEncoder::encode`] without the cache.
    ///
    /// Only the prompt's tokens go through the encoder: the reference runs all 512
    /// positions, but padded keys are masked out of every attention and padded rows
    /// are zeroed afterwards, so they cannot change the result.
    pub fn encode_uncached(&self, prompt: &str, clean: bool) -> Result<Tensor<3>> {
        let mut out = self.encode_uncached_all(&[(prompt, clean)])?;
        out.pop()
            .ok_or_else(|| Error::input("the text encoder returned nothing for its one prompt"))
    }

    /// [`TextEncoder::encode_uncached`] for several prompts, in one pass of the encoder.
    fn encode_uncached_all(&self, prompts: &[(&str, bool)]) -> Result<Vec<Tensor<3>>> {
        let mut inputs: Vec<EncoderInput> = Vec::with_capacity(prompts.len());
        for &(prompt, clean) in prompts {
            inputs.push((self.ids(&self.tokenize_for(prompt, clean)?), None));
        }
        let hidden = self.with_model(|m| m.forward_many(&inputs))?;
        let max_len = self.tokenizer.max_len();
        Ok(hidden.into_iter().map(|h| pad_rows(h, max_len)).collect())
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
