//! Every file's tensors, found by running the models' own loaders on a
//! [recording checkpoint](Checkpoint::recording): whatever a loader asks for — key, shape,
//! dtype — is what the synthetic file holds. Nothing here knows a layer: a new one is
//! written as soon as its loader reads it.
//!
//! The records are then put in the order PyTorch's `state_dict()` yields them (which is
//! the order `save_pretrained` shards in): a module's own tensors first, then its
//! children, in the order the loader first visits them ([`state_dict_order`]). And each
//! gets its fill by PyTorch's naming conventions ([`init_for`]).

use std::collections::BTreeMap;

use burn::tensor::{DType, Device};
use lynx_adapters::{IpAttn, IpLayout, RefAttn, Resampler, ResamplerConfig};
use lynx_core::Result;
use lynx_dit::{WanConfig, WanTransformer};
use lynx_store::{Checkpoint, Loader, TensorRecord};
use lynx_text::{Umt5Config, Umt5Encoder};
use lynx_vae::{VaeConfig, WanVae};

use crate::fill::Init;

/// One tensor of a synthetic file.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// What the loader asked for: key, shape, dtype.
    pub record: TensorRecord,
    /// How it is filled.
    pub init: Init,
}

impl Param {
    /// State-dict key.
    pub fn key(&self) -> &str {
        &self.record.key
    }

    /// Shape.
    pub fn shape(&self) -> &[usize] {
        &self.record.shape
    }

    /// Number of elements.
    pub fn numel(&self) -> u64 {
        self.record.shape.iter().map(|&d| d as u64).product()
    }
}

/// Default weight std: `min(0.02, 1/sqrt(fan_in))`, so that wide layers keep unit-scale
/// activations (no growth to inf through 40 bf16 blocks) and narrow ones stay at 0.02.
pub fn weight_std(fan_in: usize) -> f32 {
    (1.0 / (fan_in.max(1) as f32).sqrt()).min(0.02)
}

/// The fill of a tensor by PyTorch's conventions: `*.bias` zeros; norm gains (`*.gamma`,
/// a 1-D `*.weight`) ones; everything else noise of [`weight_std`] of its fan-in — all
/// axes after the first for a convolution kernel (rank ≥ 4), the last axis otherwise
/// (a linear layer's input width, an embedding's or a table's width).
pub fn init_for(key: &str, shape: &[usize]) -> Init {
    let name = key.rsplit('.').next().unwrap_or(key);
    match name {
        "bias" => Init::Zeros,
        "gamma" => Init::Ones,
        "weight" if shape.len() == 1 => Init::Ones,
        _ => {
            let fan_in = if shape.len() >= 4 {
                shape[1..].iter().product()
            } else {
                shape.last().copied().unwrap_or(1)
            };
            Init::Normal(weight_std(fan_in))
        }
    }
}

/// `records` in `state_dict()` order: at every module, its own tensors, then its
/// sub-modules, each group in the order the loader first asked for something in it.
pub fn state_dict_order(records: Vec<TensorRecord>) -> Vec<TensorRecord> {
    #[derive(Default)]
    struct Node {
        /// Children by name, in first-visit order.
        children: Vec<(String, Node)>,
        tensor: Option<TensorRecord>,
    }
    fn insert(node: &mut Node, path: &[&str], record: TensorRecord) {
        let Some((first, rest)) = path.split_first() else {
            node.tensor = Some(record);
            return;
        };
        let i = match node.children.iter().position(|(n, _)| n == first) {
            Some(i) => i,
            None => {
                node.children.push((first.to_string(), Node::default()));
                node.children.len() - 1
            }
        };
        insert(&mut node.children[i].1, rest, record);
    }
    fn emit(node: Node, out: &mut Vec<TensorRecord>) {
        let (own, subs): (Vec<_>, Vec<_>) = node
            .children
            .into_iter()
            .partition(|(_, c)| c.tensor.is_some());
        out.extend(own.into_iter().filter_map(|(_, c)| c.tensor));
        for (_, child) in subs {
            emit(child, out);
        }
    }
    let mut root = Node::default();
    for r in records {
        let key = r.key.clone();
        let path: Vec<&str> = key.split('.').collect();
        insert(&mut root, &path, r);
    }
    let mut out = Vec::new();
    emit(root, &mut out);
    out
}

/// Runs `load` on a recording checkpoint that also knows `declared` (sizes only a file
/// holds), and returns its tensors in state-dict order with their fills.
fn record<M>(
    declared: BTreeMap<String, Vec<usize>>,
    load: impl FnOnce(&Loader<'_>) -> Result<M>,
) -> Result<Vec<Param>> {
    record_as(DType::F32, declared, load)
}

/// [`record`] with a loader of model dtype `dtype`.
fn record_as<M>(
    dtype: DType,
    declared: BTreeMap<String, Vec<usize>>,
    load: impl FnOnce(&Loader<'_>) -> Result<M>,
) -> Result<Vec<Param>> {
    let device = Device::flex();
    let records = Checkpoint::recording(declared).record(&device, dtype, load)?;
    Ok(state_dict_order(records)
        .into_iter()
        .map(|record| Param {
            init: init_for(&record.key, &record.shape),
            record,
        })
        .collect())
}

/// `WanTransformer3DModel`: what [`WanTransformer::load`] reads.
pub fn dit(c: &WanConfig) -> Result<Vec<Param>> {
    record(BTreeMap::new(), |w| WanTransformer::load(w, c.clone()))
}

/// [`dit`] read by a loader of model dtype `dtype`: each record's dtype then tells the
/// tensors the model reads in its dtype (`dtype`: the linear layers, embeddings, biases)
/// from those it keeps in f32 (norm gains, modulation tables) — what an encoding of the
/// DiT quantises and what it keeps.
pub fn dit_as(c: &WanConfig, dtype: DType) -> Result<Vec<Param>> {
    record_as(dtype, BTreeMap::new(), |w| {
        WanTransformer::load(w, c.clone())
    })
}

/// `UMT5EncoderModel`: what [`Umt5Encoder::load`] reads.
pub fn umt5_encoder(c: &Umt5Config) -> Result<Vec<Param>> {
    record(BTreeMap::new(), |w| Umt5Encoder::load(w, c))
}

/// `AutoencoderKLWan`: what [`WanVae::load`] reads.
pub fn vae(c: &VaeConfig) -> Result<Vec<Param>> {
    record(BTreeMap::new(), |w| WanVae::load(w, c.clone()))
}

/// Lynx's Perceiver resampler: what [`Resampler::load`] reads.
pub fn resampler(c: &ResamplerConfig) -> Result<Vec<Param>> {
    record(BTreeMap::new(), |w| Ok(Resampler::load(w, c.clone())))
}

/// `ip_layers.safetensors`: `layers` IP layers ([`IpAttn::load`]) taking tokens of width
/// `token_dim` into blocks of width `dim`, each with `registers` register tokens
/// (Lynx full; 0 for none).
pub fn ip_layers(
    layout: IpLayout,
    layers: usize,
    token_dim: usize,
    dim: usize,
    registers: usize,
) -> Result<Vec<Param>> {
    let declared = (0..layers)
        .filter(|_| registers > 0)
        .map(|k| (format!("{k}.registers"), vec![1, registers, token_dim]))
        .collect();
    record(declared, |w| {
        Ok((0..layers)
            .map(|k| IpAttn::load(&w.sub(k), layout, token_dim, dim))
            .collect::<Vec<_>>())
    })
}

/// `ref_layers.safetensors`: one [`RefAttn`] per block of width `dim`.
pub fn ref_layers(blocks: usize, dim: usize) -> Result<Vec<Param>> {
    record(BTreeMap::new(), |w| {
        Ok((0..blocks)
            .map(|i| RefAttn::load(&w.sub(i), dim))
            .collect::<Vec<_>>())
    })
}
