//! The UMT5 encoder stack (transformers `UMT5EncoderModel`: `UMT5Stack` of
//! `UMT5Block`s, each `UMT5LayerSelfAttention` then `UMT5LayerFF`, pre-norm residual).

use std::sync::Arc;

use burn::module::{Module, Param};
use burn::tensor::{DType, Int, Tensor, TensorData};
use lynx_core::nn::RmsNorm;
use lynx_core::{Error, Result};
use lynx_store::SizeCheck;
use lynx_store::for_each_layer;
use lynx_store::{Checkpoint, LayerStream, Loader};

use crate::attention::{Umt5Attention, relative_position_buckets};
use crate::config::Umt5Config;
use crate::ffn::DenseGatedActDense;

/// `x + SelfAttention(layer_norm(x))` (transformers `UMT5LayerSelfAttention`, `layer.0`).
#[derive(Module, Debug)]
pub struct Umt5LayerSelfAttention {
    layer_norm: RmsNorm,
    /// PyTorch attribute `SelfAttention`.
    self_attention: Umt5Attention,
}

/// `x + DenseReluDense(layer_norm(x))` (transformers `UMT5LayerFF`, `layer.1`).
#[derive(Module, Debug)]
pub struct Umt5LayerFf {
    layer_norm: RmsNorm,
    /// PyTorch attribute `DenseReluDense`.
    dense_relu_dense: DenseGatedActDense,
}

/// One encoder block (`encoder.block.N`).
///
/// # Shapes
/// - input and output: `[batch, seq, d_model]`
#[derive(Module, Debug)]
pub struct Umt5Block {
    /// `layer.0`
    attention: Umt5LayerSelfAttention,
    /// `layer.1`
    ff: Umt5LayerFf,
}

impl Umt5Block {
    /// Loads `encoder.block.N` (`layer.0.{layer_norm, SelfAttention}`,
    /// `layer.1.{layer_norm, DenseReluDense}`).
    pub fn load(w: &Loader, cfg: &Umt5Config) -> Self {
        let (l0, l1) = (w.sub("layer").sub(0), w.sub("layer").sub(1));
        let norm = |l: &Loader| {
            l.sub("layer_norm")
                .rms_norm(cfg.d_model, cfg.layer_norm_epsilon)
        };
        // Read in `state_dict()` order (each sub-layer before its norm), which is the
        // order a synthetic checkpoint of this model is written in.
        Self {
            attention: Umt5LayerSelfAttention {
                self_attention: Umt5Attention::load(&l0.sub("SelfAttention"), cfg),
                layer_norm: norm(&l0),
            },
            ff: Umt5LayerFf {
                dense_relu_dense: DenseGatedActDense::load(&l1.sub("DenseReluDense"), cfg),
                layer_norm: norm(&l1),
            },
        }
    }

    /// `x` is the residual stream (f32 for f16 models, else `dtype`); the layers'
    /// inputs are cast to `dtype`, the model's weight dtype. Norms compute in f32.
    ///
    /// # Shapes
    /// - `x` `[batch, seq, d_model]` → same shape; `buckets` `[seq · seq]`;
    ///   `mask_bias` `[batch, 1, 1, seq]`.
    pub fn forward(
        &self,
        x: Tensor<3>,
        buckets: Tensor<1, Int>,
        mask_bias: Option<Tensor<4>>,
        dtype: DType,
    ) -> Tensor<3> {
        let stream = x.dtype();
        let h = to_dtype(self.attention.layer_norm.forward(x.clone()), dtype);
        let a = self.attention.self_attention.forward(h, buckets, mask_bias);
        let x = x + to_dtype(a, stream);
        let h = to_dtype(self.ff.layer_norm.forward(x.clone()), dtype);
        let f = self.ff.dense_relu_dense.forward(h);
        x + to_dtype(f, stream)
    }
}

/// The UMT5 encoder: token embedding, blocks, final RMS norm.
///
/// Resident ([`Umt5Encoder::load`]): every weight on the device. Streamed
/// ([`Umt5Encoder::load_streamed`]): only the final norm is; each forward reads the
/// embedding rows of its tokens and the blocks one at a time from the memory-mapped
/// checkpoint ([`LayerStream`]), so the 256k × 4096 table and the 24 XXL blocks are
/// never on the device together. Both compute the same numbers.
///
/// # Shapes
/// - `shared`: `[vocab_size, d_model]`
/// - input ids and mask: `[batch, seq]`; output: `[batch, seq, d_model]`
#[derive(Module, Debug)]
pub struct Umt5Encoder {
    /// The token embedding (`shared.weight`), when resident.
    shared: Option<Param<Tensor<2>>>,
    /// `encoder.block`, when resident.
    block: Vec<Umt5Block>,
    /// Embedding rows and blocks read per forward, when streamed.
    #[module(skip)]
    stream: Option<Umt5Stream>,
    /// `encoder.final_layer_norm`
    final_layer_norm: RmsNorm,
    relative_attention_num_buckets: usize,
    relative_attention_max_distance: usize,
    /// The weights' dtype.
    #[module(skip)]
    dtype: DType,
}

/// Where a streamed encoder reads its weights.
#[derive(Debug, Clone)]
struct Umt5Stream {
    /// The checkpoint, for the embedding rows.
    ckpt: Arc<Checkpoint>,
    /// The key of the embedding table.
    shared_key: String,
    /// `encoder.block.N`, one at a time.
    blocks: LayerStream<Umt5Block>,
}

/// One forward's input: ids and an optional mask, `[batch, seq]` each.
pub type EncoderInput = (Tensor<2, Int>, Option<Tensor<2, Int>>);

impl Umt5Encoder {
    /// Loads a transformers `UMT5EncoderModel` state dict (`text_encoder/model*.safetensors`)
    /// in the loader's dtype (norm weights in f32; `wo` in f32 for f16 models):
    ///
    /// | keys | module |
    /// |---|---|
    /// | `shared.weight` (or its tied copy `encoder.embed_tokens.weight`) | embedding |
    /// | `encoder.block.N.*` | [`Umt5Block`] |
    /// | `encoder.final_layer_norm.weight` | final norm |
    ///
    /// A full encoder–decoder checkpoint also loads: `decoder.*` and `lm_head.*` are
    /// ignored. The config's sizes are checked against the checkpoint's shapes first
    /// ([`SizeCheck`]).
    pub fn load(w: &Loader, cfg: &Umt5Config) -> Result<Self> {
        let shared_key = Self::shared_key(w);
        Self::check_sizes(w, cfg, shared_key)?;
        let enc = w.sub("encoder");
        Ok(Self {
            shared: Some(
                w.sub(shared_key)
                    .param("weight", [cfg.vocab_size, cfg.d_model]),
            ),
            block: (0..cfg.num_layers)
                .map(|i| Umt5Block::load(&enc.sub("block").sub(i), cfg))
                .collect(),
            stream: None,
            final_layer_norm: Self::final_norm(w, cfg),
            relative_attention_num_buckets: cfg.relative_attention_num_buckets,
            relative_attention_max_distance: cfg.relative_attention_max_distance,
            dtype: w.dtype(),
        })
    }

    /// [`Umt5Encoder::load`] with the embedding table and the blocks left in `ckpt` (the
    /// checkpoint `w` reads): their keys and shapes are checked now, and each forward
    /// reads the rows of its tokens and the blocks one at a time.
    pub fn load_streamed(w: &Loader, cfg: &Umt5Config, ckpt: Arc<Checkpoint>) -> Result<Self> {
        let shared_key = Self::shared_key(w);
        Self::check_sizes(w, cfg, shared_key)?;
        let check = w.validating();
        drop(
            check
                .sub(shared_key)
                .tensor::<2>("weight", [cfg.vocab_size, cfg.d_model]),
        );
        let (blocks, check) = (
            w.sub("encoder").sub("block"),
            check.sub("encoder").sub("block"),
        );
        for i in 0..cfg.num_layers {
            drop(Umt5Block::load(&check.sub(i), cfg));
        }
        let prefixes = (0..cfg.num_layers)
            .map(|i| blocks.key(&i.to_string()))
            .collect();
        let layer_cfg = cfg.clone();
        let layers = LayerStream::new(ckpt.clone(), prefixes, w.device(), w.dtype(), move |l| {
            Umt5Block::load(l, &layer_cfg)
        });
        Ok(Self {
            shared: None,
            block: Vec::new(),
            stream: Some(Umt5Stream {
                ckpt,
                shared_key: w.sub(shared_key).key("weight"),
                blocks: layers,
            }),
            final_layer_norm: Self::final_norm(w, cfg),
            relative_attention_num_buckets: cfg.relative_attention_num_buckets,
            relative_attention_max_distance: cfg.relative_attention_max_distance,
            dtype: w.dtype(),
        })
    }

    /// The embedding's key prefix: `shared`, or its tied copy when only that is stored;
    /// marks the other copy and a decoder as deliberately unused.
    fn shared_key(w: &Loader) -> &'static str {
        // transformers ties `encoder.embed_tokens` to `shared`; files hold one or both.
        let key = if w.has("shared.weight") || !w.has("encoder.embed_tokens.weight") {
            w.ignore("encoder.embed_tokens.weight");
            "shared"
        } else {
            "encoder.embed_tokens"
        };
        w.ignore("decoder.");
        w.ignore("lm_head.");
        key
    }

    /// The config's sizes against the checkpoint's shapes, all mismatches in one error.
    fn check_sizes(w: &Loader, cfg: &Umt5Config, shared_key: &str) -> Result<()> {
        let shared = format!("{shared_key}.weight");
        let layer = "encoder.block.0.layer";
        SizeCheck::new(&cfg.path, w)
            .dim("vocab_size", cfg.vocab_size, &shared, 0)
            .dim("d_model", cfg.d_model, &shared, 1)
            .dim(
                "num_heads × d_kv",
                cfg.inner_dim(),
                &format!("{layer}.0.SelfAttention.q.weight"),
                0,
            )
            .dim(
                "d_ff",
                cfg.d_ff,
                &format!("{layer}.1.DenseReluDense.wi_0.weight"),
                0,
            )
            .dim(
                "relative_attention_num_buckets",
                cfg.relative_attention_num_buckets,
                &format!("{layer}.0.SelfAttention.relative_attention_bias.weight"),
                0,
            )
            .count("num_layers", cfg.num_layers, "encoder.block")
            .finish()
    }

    fn final_norm(w: &Loader, cfg: &Umt5Config) -> RmsNorm {
        w.sub("encoder")
            .sub("final_layer_norm")
            .rms_norm(cfg.d_model, cfg.layer_norm_epsilon)
    }

    /// The model's weight dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Whether the embedding and the blocks are read from the checkpoint per forward.
    pub fn is_streamed(&self) -> bool {
        self.stream.is_some()
    }

    /// The last hidden state (transformers `last_hidden_state`), in the model dtype.
    /// `mask` (1 = token, 0 = padding) keeps padded keys out of every attention; the
    /// padded rows are computed all the same, as the reference does. Without a mask
    /// every position is attended.
    ///
    /// # Shapes
    /// - `ids`, `mask` `[batch, seq]` → `[batch, seq, d_model]`.
    pub fn forward(&self, ids: Tensor<2, Int>, mask: Option<Tensor<2, Int>>) -> Result<Tensor<3>> {
        let mut out = self.forward_many(&[(ids, mask)])?;
        out.pop()
            .ok_or_else(|| Error::input("the text encoder returned nothing for its one input"))
    }

    /// [`Umt5Encoder::forward`] for several inputs, each block running all of them before
    /// the next (a streamed encoder reads its blocks once for all).
    ///
    /// # Shapes
    /// - per input as [`Umt5Encoder::forward`]; one output per input.
    pub fn forward_many(&self, inputs: &[EncoderInput]) -> Result<Vec<Tensor<3>>> {
        let dtype = self.dtype;
        let mut hidden = Vec::with_capacity(inputs.len());
        let mut extras = Vec::with_capacity(inputs.len());
        for (ids, mask) in inputs {
            let [batch, seq] = ids.dims();
            let device = ids.device();
            hidden.push(to_dtype(self.embed(ids.clone())?, residual_dtype(dtype)));
            let buckets = relative_position_buckets(
                seq,
                self.relative_attention_num_buckets,
                self.relative_attention_max_distance,
            );
            let buckets =
                Tensor::<1, Int>::from_data(TensorData::new(buckets, [seq * seq]), &device);
            let mask_bias = mask.clone().map(|m| {
                // 0 for tokens, the dtype's lowest value for padding (transformers'
                // extended attention mask).
                (m.equal_elem(0).float().cast(dtype) * lowest(dtype)).reshape([batch, 1, 1, seq])
            });
            extras.push((buckets, mask_bias));
        }
        let stream = self.stream.as_ref().map(|s| &s.blocks);
        for_each_layer(&self.block, stream, |_, block| {
            hidden = std::mem::take(&mut hidden)
                .into_iter()
                .zip(&extras)
                .map(|(x, (buckets, bias))| block.forward(x, buckets.clone(), bias.clone(), dtype))
                .collect();
            Ok(())
        })?;
        Ok(hidden
            .into_iter()
            .map(|x| to_dtype(self.final_layer_norm.forward(x), dtype))
            .collect())
    }

    /// The embedding rows of `ids`: a lookup in the resident table, or the rows read
    /// from the checkpoint.
    fn embed(&self, ids: Tensor<2, Int>) -> Result<Tensor<3>> {
        if let Some(table) = &self.shared {
            return Ok(burn::tensor::module::embedding(table.val(), ids));
        }
        let Some(stream) = &self.stream else {
            return Err(Error::input("the text encoder has no embedding table"));
        };
        let [batch, seq] = ids.dims();
        let device = ids.device();
        let rows: Vec<usize> = ids
            .try_into_data()
            .map_err(|e| Error::read_back(&device, "the token ids", e))?
            .convert::<i64>()
            .iter::<i64>()
            .map(|id| usize::try_from(id).unwrap_or(usize::MAX))
            .collect();
        let data = stream
            .ckpt
            .read_rows(&stream.shared_key, &rows, self.dtype)?;
        let d = data.shape()[1];
        Ok(Tensor::<2>::from_data(data, (&device, self.dtype)).reshape([batch, seq, d]))
    }
}

/// The residual stream's dtype: f32 for f16 models (their f32 `wo` output promotes it
/// in the reference, and f16 would overflow), the model dtype otherwise.
pub fn residual_dtype(dtype: DType) -> DType {
    crate::ffn::wo_dtype(dtype)
}

/// `torch.finfo(dtype).min`.
fn lowest(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => -65504.0,
        DType::BF16 => -3.389_531_389_251_535_5e38,
        DType::F64 => f64::MIN,
        _ => f32::MIN as f64,
    }
}

pub(crate) fn to_dtype<const D: usize>(t: Tensor<D>, dtype: DType) -> Tensor<D> {
    if t.dtype() == dtype { t } else { t.cast(dtype) }
}
