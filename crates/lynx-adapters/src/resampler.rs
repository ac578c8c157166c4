//! Perceiver Resampler (Lynx `modules/common/resampler.py`, from IP-Adapter / Flamingo):
//! learned query latents attend to the projected face embedding and to themselves.
//!
//! ```text
//! x = proj_in(face)                                   [B, n, dim]
//! latents = latents.repeat(B)                         [B, Q, dim]
//! for each layer:
//!     latents += to_out(attn(to_q(LN₂(latents)), to_kv(LN₁(x) ‖ LN₂(latents))))
//!     latents += W₂ · gelu(W₁ · LN(latents))          (exact GELU, no biases)
//! tokens = norm_out(proj_out(latents))                [B, Q, output_dim]
//! ```
//!
//! The reference scales `q` and `k` each by `dim_head^(−1/4)`, the default
//! `1/√dim_head` overall, so the attention runs through the fused
//! [`lynx_core::nn::attention`] with no scale. Layer norms (eps 1e-5, affine) in f32.
//!
//! | key (`resampler.safetensors`) | module |
//! |---|---|
//! | `latents [1, Q, dim]`, `proj_in.*`, `proj_out.*`, `norm_out.*` | [`Resampler`] |
//! | `layers.N.0.{norm1,norm2,to_q,to_kv,to_out}.*` | [`PerceiverAttention`] |
//! | `layers.N.1.{0,1,3}.*` (LayerNorm, Linear, —, Linear) | [`ResamplerFeedForward`] |
//!
//! # Shapes
//! - input: face embedding `[B, n, embedding_dim]` (Lynx: `[1, 1, 512]` ArcFace).
//! - output: ID tokens `[B, num_queries, output_dim]` (Lynx full: `[1, 16, 5120]`;
//!   Lynx-lite: `[1, 16, 2048]`).

use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::activation::gelu;
use lynx_core::nn::Linear;
use lynx_core::nn::{LayerNorm, attention, linear, merge_heads, split_heads};
use lynx_core::{Error, Result};
use lynx_store::{Checkpoint, Loader};

/// `nn.LayerNorm`'s default epsilon, which the resampler keeps.
pub const LAYER_NORM_EPS: f64 = 1e-5;

/// Sizes of a resampler. All but the head split come from the tensors
/// ([`ResamplerConfig::from_checkpoint`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResamplerConfig {
    /// Number of attention + feed-forward layers.
    pub depth: usize,
    /// Width of the latents.
    pub dim: usize,
    /// Width of one attention head (not recorded in the file).
    pub dim_head: usize,
    /// Attention heads.
    pub heads: usize,
    /// Learned query latents: the number of ID tokens.
    pub num_queries: usize,
    /// Width of the face embedding taken (ArcFace: 512).
    pub embedding_dim: usize,
    /// Width of the ID tokens made.
    pub output_dim: usize,
    /// `dim × ff_mult`.
    pub ff_inner_dim: usize,
}

impl ResamplerConfig {
    /// The head width of the released Lynx resampler (`dim_head=64`, 20 heads of 1280).
    pub const LYNX_DIM_HEAD: usize = 64;

    /// Reads the sizes from `resampler.safetensors`; `dim_head` cannot be read from the
    /// tensors (only `heads × dim_head` can) and is given.
    pub fn from_checkpoint(ckpt: &Checkpoint, dim_head: usize) -> Result<Self> {
        let shape = |key: &str, rank: usize| -> Result<Vec<usize>> {
            let s = ckpt.shape(key).ok_or_else(|| Error::MissingKey {
                path: ckpt.path().to_path_buf(),
                key: key.into(),
            })?;
            if s.len() != rank {
                return Err(Error::Shape {
                    path: ckpt.path().to_path_buf(),
                    key: key.into(),
                    expected: vec![0; rank],
                    found: s.to_vec(),
                });
            }
            Ok(s.to_vec())
        };
        let unsupported = |what: &str| {
            Error::format(
                ckpt.path(),
                "Perceiver Resampler",
                format!("it has {what}, which the Lynx resampler does not use"),
            )
        };
        if ckpt.keys().any(|k| k.starts_with("pos_emb.")) {
            return Err(unsupported("positional embeddings (`pos_emb`)"));
        }
        if ckpt
            .keys()
            .any(|k| k.starts_with("to_latents_from_mean_pooled_seq."))
        {
            return Err(unsupported("mean-pooled latents"));
        }
        let latents = shape("latents", 3)?;
        let proj_in = shape("proj_in.weight", 2)?;
        let proj_out = shape("proj_out.weight", 2)?;
        let depth = (0..)
            .take_while(|i| ckpt.contains(&format!("layers.{i}.0.to_q.weight")))
            .count();
        if depth == 0 {
            return Err(Error::MissingKey {
                path: ckpt.path().to_path_buf(),
                key: "layers.0.0.to_q.weight".into(),
            });
        }
        let inner = shape("layers.0.0.to_q.weight", 2)?[0];
        let ff_inner_dim = shape("layers.0.1.1.weight", 2)?[0];
        if dim_head == 0 || inner % dim_head != 0 {
            return Err(Error::input(format!(
                "{}: attention width {inner} is not a multiple of dim_head = {dim_head}",
                ckpt.path().display()
            )));
        }
        Ok(Self {
            depth,
            dim: latents[2],
            dim_head,
            heads: inner / dim_head,
            num_queries: latents[1],
            embedding_dim: proj_in[1],
            output_dim: proj_out[0],
            ff_inner_dim,
        })
    }

    /// Width of the attention (`heads × dim_head`).
    pub fn inner_dim(&self) -> usize {
        self.heads * self.dim_head
    }
}

/// `PerceiverAttention`.
#[derive(Module, Debug)]
pub struct PerceiverAttention {
    /// On the face features.
    norm1: LayerNorm,
    /// On the latents.
    norm2: LayerNorm,
    to_q: Linear,
    /// Keys and values stacked: `[2·inner, dim]` in the file.
    to_kv: Linear,
    to_out: Linear,
    heads: usize,
}

impl PerceiverAttention {
    /// Loads `layers.N.0` (no biases; layer norms with affine parts).
    pub fn load(w: &Loader, c: &ResamplerConfig) -> Self {
        let inner = c.inner_dim();
        Self {
            norm1: w.sub("norm1").layer_norm(c.dim, LAYER_NORM_EPS),
            norm2: w.sub("norm2").layer_norm(c.dim, LAYER_NORM_EPS),
            to_q: w.sub("to_q").linear(c.dim, inner, false),
            to_kv: w.sub("to_kv").linear(c.dim, 2 * inner, false),
            to_out: w.sub("to_out").linear(inner, c.dim, false),
            heads: c.heads,
        }
    }

    /// The latents attend to the face features and to themselves.
    ///
    /// # Shapes
    /// - `x` `[B, n, dim]`, `latents` `[B, Q, dim]` → `[B, Q, dim]`.
    pub fn forward(&self, x: Tensor<3>, latents: Tensor<3>) -> Tensor<3> {
        let dtype = latents.dtype();
        let x = self.norm1.forward(x).cast(dtype);
        let latents = self.norm2.forward(latents).cast(dtype);
        let q = linear(&self.to_q, latents.clone());
        let kv = linear(&self.to_kv, Tensor::cat(vec![x, latents], 1));
        let mut kv = kv.chunk(2, 2).into_iter();
        let (k, v) = (kv.next().unwrap(), kv.next().unwrap());
        let out = attention(
            split_heads(q, self.heads),
            split_heads(k, self.heads),
            split_heads(v, self.heads),
            None,
            None,
        );
        linear(&self.to_out, merge_heads(out))
    }
}

/// The resampler's `FeedForward`: `LayerNorm → Linear → GELU → Linear`, no biases.
#[derive(Module, Debug)]
pub struct ResamplerFeedForward {
    /// `.0`
    norm: LayerNorm,
    /// `.1`: dim → dim·ff_mult.
    fc1: Linear,
    /// `.3`: dim·ff_mult → dim.
    fc2: Linear,
}

impl ResamplerFeedForward {
    /// Loads `layers.N.1` (`.0` LayerNorm, `.1` and `.3` Linear without bias).
    pub fn load(w: &Loader, c: &ResamplerConfig) -> Self {
        Self {
            norm: w.sub(0).layer_norm(c.dim, LAYER_NORM_EPS),
            fc1: w.sub(1).linear(c.dim, c.ff_inner_dim, false),
            fc2: w.sub(3).linear(c.ff_inner_dim, c.dim, false),
        }
    }

    /// # Shapes
    /// - input `[B, Q, dim]`, output `[B, Q, dim]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = self.norm.forward(x.clone()).cast(x.dtype());
        linear(&self.fc2, gelu(linear(&self.fc1, h)))
    }
}

/// One `layers.N` entry: attention then feed-forward, each residual.
#[derive(Module, Debug)]
pub struct ResamplerLayer {
    /// `.0`
    attn: PerceiverAttention,
    /// `.1`
    ff: ResamplerFeedForward,
}

impl ResamplerLayer {
    /// Loads `layers.N`.
    pub fn load(w: &Loader, c: &ResamplerConfig) -> Self {
        Self {
            attn: PerceiverAttention::load(&w.sub(0), c),
            ff: ResamplerFeedForward::load(&w.sub(1), c),
        }
    }

    /// Both residual steps.
    ///
    /// # Shapes
    /// - `x` `[B, n, dim]`, `latents` `[B, Q, dim]` → `[B, Q, dim]`.
    pub fn forward(&self, x: Tensor<3>, latents: Tensor<3>) -> Tensor<3> {
        let latents = self.attn.forward(x, latents.clone()) + latents;
        self.ff.forward(latents.clone()) + latents
    }
}

/// The Perceiver Resampler turning a face embedding into ID tokens.
#[derive(Module, Debug)]
pub struct Resampler {
    /// `[1, Q, dim]`.
    latents: Param<Tensor<3>>,
    proj_in: Linear,
    layers: Vec<ResamplerLayer>,
    proj_out: Linear,
    norm_out: LayerNorm,
    #[module(skip)]
    config: ResamplerConfig,
}

impl Resampler {
    /// Loads `resampler.safetensors` of the sizes in `config` (keys in the module docs).
    pub fn load(w: &Loader, config: ResamplerConfig) -> Self {
        let c = &config;
        Self {
            latents: w.param("latents", [1, c.num_queries, c.dim]),
            proj_in: w.sub("proj_in").linear(c.embedding_dim, c.dim, true),
            layers: (0..c.depth)
                .map(|i| ResamplerLayer::load(&w.sub("layers").sub(i), c))
                .collect(),
            proj_out: w.sub("proj_out").linear(c.dim, c.output_dim, true),
            norm_out: w.sub("norm_out").layer_norm(c.output_dim, LAYER_NORM_EPS),
            config,
        }
    }

    /// Opens a `resampler.safetensors` and builds the resampler it holds; its sizes come
    /// from the tensors, the head width (`dim_head`) is given.
    pub fn from_file(
        path: impl AsRef<std::path::Path>,
        dim_head: usize,
        device: &burn::tensor::Device,
        dtype: burn::tensor::DType,
    ) -> Result<Self> {
        lynx_store::load_module(path, device, dtype, |w| {
            let config = ResamplerConfig::from_checkpoint(w.checkpoint(), dim_head)?;
            Ok(Self::load(w, config))
        })
    }

    /// The sizes.
    pub fn config(&self) -> &ResamplerConfig {
        &self.config
    }

    /// The dtype of the weights, and of the tokens made.
    pub fn dtype(&self) -> burn::tensor::DType {
        self.latents.val().dtype()
    }

    /// Face embedding `[B, n, embedding_dim]` → ID tokens `[B, Q, output_dim]` in the
    /// weights' dtype.
    ///
    /// # Shapes
    /// - input `[B, n, embedding_dim]`, output `[B, num_queries, output_dim]`.
    pub fn forward(&self, face: Tensor<3>) -> Result<Tensor<3>> {
        let [b, n, e] = face.dims();
        if e != self.config.embedding_dim || b == 0 || n == 0 {
            return Err(Error::input(format!(
                "face embedding of shape {:?}, the resampler takes [B, n, {}]",
                face.dims(),
                self.config.embedding_dim
            )));
        }
        let dtype = self.latents.val().dtype();
        let x = linear(&self.proj_in, face.cast(dtype));
        let mut latents = self.latents.val().repeat_dim(0, b);
        for layer in &self.layers {
            latents = layer.forward(x.clone(), latents);
        }
        let out = linear(&self.proj_out, latents);
        Ok(self.norm_out.forward(out).cast(dtype))
    }
}
