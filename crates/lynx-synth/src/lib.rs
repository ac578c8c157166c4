//! lynx-synth (a tool, not published): synthetic checkpoints — random weights in exactly
//! the released file layout and at the real sizes, to exercise loading, memory and speed
//! without the real weights. The `lynx synth-model` command runs it.
//!
//! Writes, under an output folder:
//! - `Wan2.1-T2V-{14B,1.3B}-Diffusers/` as `Wan-AI/Wan2.1-T2V-*-Diffusers` on the Hub:
//!   `model_index.json`, `scheduler/scheduler_config.json`, `text_encoder/` (UMT5-XXL
//!   encoder, transformers shards + `model.safetensors.index.json`), `tokenizer/` (copied
//!   from a given folder: the real tokenizer cannot be made here), `transformer/`
//!   (`WanTransformer3DModel`, diffusers shards + index) and `vae/` (`AutoencoderKLWan`);
//! - `lynx_full/` as `ByteDance/lynx`: `resampler.safetensors`, `ip_layers.safetensors`
//!   (with `registers`), `ref_layers.safetensors`;
//! - `lynx_lite/` (optional): `resampler.safetensors`, `ip_layers.safetensors`;
//! - `loras/` (optional, [`SynthOptions::lora_rank`]): a LoRA for the DiT in the layout of
//!   lightx2v's step-distillation LoRAs ([`lora`]), e.g.
//!   `Wan2.1-T2V-14B-synthetic-lora-rank64.safetensors`.
//!
//! Nothing here describes a layer. A [`Preset`] is the models' own configs ([`presets`]);
//! each file's tensors are what the models' own loaders ask a recording checkpoint for
//! ([`walk`]: key, shape, dtype), in state-dict order, and each `config.json` is the
//! model's config type serialised ([`json`]). [`plan`] computes every file's exact size
//! without writing anything; [`write_plan`] streams the tensors to disk in chunks of a
//! few MB through lynx-store's
//! [`SafetensorsWriter`](lynx_store::safetensors_io::SafetensorsWriter), so no model is
//! ever held in memory, and [`sparse::write_plan`] writes only the headers (the data a
//! hole), for tests of what reads only headers at the real sizes.
//!
//! [`subject`] writes a random face embedding and aligned face to run Lynx full with.
//!
//! Other files of the same models come the same way, without describing a layer: the
//! synthetic LoRA ([`lora`]) is the DiT's records, each linear layer (a rank-2
//! `*.weight`) giving a `lora_down [rank, in]` and a `lora_up [out, rank]` (norms,
//! biases and modulation tables their whole-tensor deltas) under the LoRA file's native
//! key names. An fp8 or GGUF encoding of the
//! DiT writes the same records in another encoding per record (the model-dtype matrices
//! quantised, the tensors read in f32 kept; [`encoded`], with the encoders in
//! [`quantize`]). Each is a new kind of file content in [`plan`], fed by the same walk:
//! with [`SynthOptions::encoding`] the DiT is one native-key file beside the folder
//! (whose `transformer/` then holds only its config).

#![warn(missing_docs)]

pub mod encoded;
pub mod fill;
pub mod json;
pub mod lora;
pub mod presets;
pub mod quantize;
pub mod shard;
pub mod sparse;
pub mod subject;
pub mod walk;
mod write;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub use encoded::{DitEncoding, DitFile};
pub use fill::Init;
pub use presets::{Lite, ModelSet, Preset};
pub use walk::Param;
pub use write::{Progress, SynthReport, WrittenFile, write_plan, write_synthetic};

use lynx_adapters::IpLayout;
use lynx_core::{Error, Result};
use lynx_store::safetensors_io::{Dtype, Layout, TensorSpec};

/// The dtype every synthetic weight is written in. (The released Wan2.1 Diffusers
/// checkpoints are all `F32`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightDtype {
    /// bfloat16: half the size of the release.
    BF16,
    /// float32, as released.
    F32,
}

impl WeightDtype {
    /// The safetensors dtype.
    pub fn dtype(self) -> Dtype {
        match self {
            WeightDtype::BF16 => Dtype::BF16,
            WeightDtype::F32 => Dtype::F32,
        }
    }

    /// The name `config.json`'s `torch_dtype` uses.
    pub fn torch_name(self) -> &'static str {
        match self {
            WeightDtype::BF16 => "bfloat16",
            WeightDtype::F32 => "float32",
        }
    }
}

/// The part of the model set a file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    /// `model_index.json`.
    ModelIndex,
    /// `scheduler/`.
    Scheduler,
    /// `text_encoder/`.
    TextEncoder,
    /// `tokenizer/`.
    Tokenizer,
    /// `transformer/`.
    Transformer,
    /// `vae/`.
    Vae,
    /// `lynx_full/`.
    LynxFull,
    /// `lynx_lite/`.
    LynxLite,
    /// `loras/`.
    Lora,
}

impl Component {
    /// Folder-like name (`"text_encoder"`, `"lynx_full"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Component::ModelIndex => "model_index",
            Component::Scheduler => "scheduler",
            Component::TextEncoder => "text_encoder",
            Component::Tokenizer => "tokenizer",
            Component::Transformer => "transformer",
            Component::Vae => "vae",
            Component::LynxFull => "lynx_full",
            Component::LynxLite => "lynx_lite",
            Component::Lora => "loras",
        }
    }
}

/// Choices beyond the preset and the dtype.
#[derive(Debug, Clone)]
pub struct SynthOptions {
    /// Seed of all random values.
    pub seed: u64,
    /// Folder whose files are copied into `tokenizer/` (e.g. the tiny fixture's
    /// tokenizer); `None` writes only the README.
    pub tokenizer_dir: Option<PathBuf>,
    /// Whether to write `lynx_lite/` (when the model set has one).
    pub lite: bool,
    /// Caps the DiT's blocks and the text encoder's layers at this many (the adapters
    /// follow the DiT): the real widths at a fraction of the size, to check per-block
    /// memory and loading without writing the whole model.
    pub layers: Option<usize>,
    /// Also write a LoRA of this rank for the DiT under `loras/` ([`lora`]; 64 is the
    /// rank of lightx2v's step-distillation LoRAs).
    pub lora_rank: Option<usize>,
    /// Writes the DiT as one file in this encoding (fp8, scaled fp8, GGUF) instead of
    /// the diffusers shards ([`encoded`]).
    pub encoding: Option<DitEncoding>,
}

impl Default for SynthOptions {
    fn default() -> Self {
        Self {
            seed: 1234,
            tokenizer_dir: None,
            lite: true,
            layers: None,
            lora_rank: None,
            encoding: None,
        }
    }
}

impl SynthOptions {
    /// `set` with [`SynthOptions::layers`] applied.
    pub fn apply(&self, set: &ModelSet) -> ModelSet {
        let mut set = set.clone();
        if let Some(n) = self.layers {
            set.dit.num_layers = set.dit.num_layers.min(n);
            set.text.num_layers = set.text.num_layers.min(n);
        }
        set
    }
}

#[derive(Debug)]
enum Content {
    Text(String),
    Copy(PathBuf),
    Tensors { layout: Layout, inits: Vec<Init> },
    Dit(Box<DitFile>),
}

/// One file of a [`Plan`].
#[derive(Debug)]
pub struct PlannedFile {
    /// Path relative to the output folder.
    pub path: PathBuf,
    /// What it belongs to.
    pub component: Component,
    /// Exact size in bytes.
    pub bytes: u64,
    content: Content,
}

impl PlannedFile {
    /// The tensors of a `.safetensors` file, in file order (empty for other files).
    pub fn tensors(&self) -> &[TensorSpec] {
        match &self.content {
            Content::Tensors { layout, .. } => layout.tensors(),
            _ => &[],
        }
    }

    /// How each of [`PlannedFile::tensors`] is filled, in the same order (empty for
    /// other files).
    pub fn inits(&self) -> &[Init] {
        match &self.content {
            Content::Tensors { inits, .. } => inits.as_slice(),
            _ => &[],
        }
    }
}

/// Every file a model set consists of, with exact sizes; nothing written yet.
#[derive(Debug)]
pub struct Plan {
    /// The configs planned for.
    pub models: ModelSet,
    /// The weights' dtype.
    pub dtype: WeightDtype,
    /// Seed of all random values.
    pub seed: u64,
    /// The files, in writing order.
    pub files: Vec<PlannedFile>,
}

impl Plan {
    /// Sum of all file sizes.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }

    /// Bytes per component.
    pub fn component_bytes(&self) -> BTreeMap<Component, u64> {
        let mut m = BTreeMap::new();
        for f in &self.files {
            *m.entry(f.component).or_default() += f.bytes;
        }
        m
    }
}

const TOKENIZER_README: &str = "\
This tokenizer folder belongs to a SYNTHETIC model written by lynx-rs (random weights in
the layout of Wan-AI/Wan2.1-T2V-*-Diffusers). The real UMT5 tokenizer (spiece.model,
tokenizer.json, 256384 tokens) cannot be made offline; the files here, if any, are copied
from a small test tokenizer. Token ids it produces are valid rows of the synthetic
`shared.weight`, but the text encoding is meaningless.
";

/// Adds the `.safetensors` shards (and index) of one model to `files`.
fn sharded(
    files: &mut Vec<PlannedFile>,
    dir: &Path,
    prefix: &str,
    component: Component,
    params: Vec<Param>,
    dtype: Dtype,
    max_shard: u64,
) -> Result<()> {
    let sizes: Vec<u64> = params
        .iter()
        .map(|p| p.numel() * dtype.size() as u64)
        .collect();
    let shards = shard::split(&sizes, max_shard);
    let names = shard::shard_names(prefix, shards.len());
    let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let mut weight_map = BTreeMap::new();
    for (members, name) in shards.iter().zip(&names) {
        let group: Vec<&Param> = members.iter().map(|&i| &params[i]).collect();
        for p in &group {
            weight_map.insert(p.key().to_string(), name.clone());
        }
        files.push(tensor_file(
            dir.join(name),
            component,
            &group,
            dtype,
            Some(&metadata),
        )?);
    }
    if shards.len() > 1 {
        let text = shard::index_json(sizes.iter().sum(), &weight_map);
        let path = dir.join(format!("{prefix}.safetensors.index.json"));
        files.push(text_file(path, component, text));
    }
    Ok(())
}

fn tensor_file(
    path: PathBuf,
    component: Component,
    params: &[&Param],
    dtype: Dtype,
    metadata: Option<&BTreeMap<String, String>>,
) -> Result<PlannedFile> {
    let specs = params
        .iter()
        .map(|p| TensorSpec::new(p.key(), dtype, p.shape()))
        .collect();
    let layout = Layout::new(specs, metadata)?;
    let by_key: HashMap<&str, Init> = params.iter().map(|p| (p.key(), p.init)).collect();
    let inits = layout
        .tensors()
        .iter()
        .map(|t| by_key[t.name.as_str()])
        .collect();
    Ok(PlannedFile {
        path,
        component,
        bytes: layout.file_len(),
        content: Content::Tensors { layout, inits },
    })
}

fn text_file(path: PathBuf, component: Component, text: String) -> PlannedFile {
    PlannedFile {
        path,
        component,
        bytes: text.len() as u64,
        content: Content::Text(text),
    }
}

/// Plans every file of `models` in `dtype`: paths relative to the output folder, exact
/// sizes, contents. Runs the models' loaders on recording checkpoints (no weights are
/// made) and reads only the tokenizer folder's listing.
pub fn plan(models: &ModelSet, dtype: WeightDtype, opts: &SynthOptions) -> Result<Plan> {
    use Component as C;
    let m = &opts.apply(models);
    let dt = dtype.dtype();
    let mut files = Vec::new();
    let wan = PathBuf::from(&m.wan_folder);
    let dit_dim = m.dit.inner_dim();
    let blocks = m.dit.num_layers;

    files.push(text_file(
        wan.join("model_index.json"),
        C::ModelIndex,
        json::dumps(&json::model_index(&m.transformer_library)),
    ));
    files.push(text_file(
        wan.join("scheduler/scheduler_config.json"),
        C::Scheduler,
        json::dumps(&json::scheduler(m.flow_shift)),
    ));

    let te = wan.join("text_encoder");
    let te_config = json::text_encoder(&m.text, dtype.torch_name())?;
    files.push(text_file(
        te.join("config.json"),
        C::TextEncoder,
        json::dumps(&te_config),
    ));
    let te_params = walk::umt5_encoder(&m.text)?;
    sharded(
        &mut files,
        &te,
        "model",
        C::TextEncoder,
        te_params,
        dt,
        m.text_max_shard,
    )?;

    let tok = wan.join("tokenizer");
    if let Some(src) = &opts.tokenizer_dir {
        let entries = std::fs::read_dir(src).map_err(|e| Error::io(src, e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(src, e))?;
            let meta = entry.metadata().map_err(|e| Error::io(entry.path(), e))?;
            if meta.is_file() && entry.file_name() != "README.txt" {
                names.push((entry.file_name(), meta.len()));
            }
        }
        names.sort();
        for (name, len) in names {
            files.push(PlannedFile {
                path: tok.join(&name),
                component: C::Tokenizer,
                bytes: len,
                content: Content::Copy(src.join(&name)),
            });
        }
    }
    files.push(text_file(
        tok.join("README.txt"),
        C::Tokenizer,
        TOKENIZER_README.into(),
    ));

    let tr = wan.join("transformer");
    let tr_config = json::dumps(&json::transformer(&m.dit)?);
    files.push(text_file(tr.join("config.json"), C::Transformer, tr_config));
    let prefix = "diffusion_pytorch_model";
    if let Some(enc) = opts.encoding {
        let dit = DitFile::plan(&m.dit, enc)?;
        let model = m.wan_folder.trim_end_matches("-Diffusers");
        files.push(PlannedFile {
            path: PathBuf::from(enc.file_name(&model.replacen("Wan2.1-T2V-", "wan2.1_t2v_", 1))),
            component: C::Transformer,
            bytes: dit.bytes,
            content: Content::Dit(Box::new(dit)),
        });
    } else {
        let params = walk::dit(&m.dit)?;
        sharded(
            &mut files,
            &tr,
            prefix,
            C::Transformer,
            params,
            dt,
            m.dit_max_shard,
        )?;
    }

    let vae = wan.join("vae");
    let vae_config = json::dumps(&json::vae(&m.vae)?);
    files.push(text_file(vae.join("config.json"), C::Vae, vae_config));
    sharded(
        &mut files,
        &vae,
        prefix,
        C::Vae,
        walk::vae(&m.vae)?,
        dt,
        m.vae_max_shard,
    )?;

    let full = PathBuf::from("lynx_full");
    let r = &m.resampler;
    let adapters = [
        ("resampler", walk::resampler(r)?),
        (
            "ip_layers",
            walk::ip_layers(IpLayout::Full, blocks, r.output_dim, dit_dim, m.n_registers)?,
        ),
        ("ref_layers", walk::ref_layers(blocks, dit_dim)?),
    ];
    for (name, params) in adapters {
        let group: Vec<&Param> = params.iter().collect();
        let path = full.join(format!("{name}.safetensors"));
        files.push(tensor_file(path, C::LynxFull, &group, dt, None)?);
    }

    if let (true, Some(lite)) = (opts.lite, &m.lite) {
        let dir = PathBuf::from("lynx_lite");
        let token_dim = lite.resampler.output_dim;
        let layers = blocks.div_ceil(lite.interval.max(1));
        let adapters = [
            ("resampler", walk::resampler(&lite.resampler)?),
            (
                "ip_layers",
                walk::ip_layers(IpLayout::Lite, layers, token_dim, dit_dim, 0)?,
            ),
        ];
        for (name, params) in adapters {
            let group: Vec<&Param> = params.iter().collect();
            let path = dir.join(format!("{name}.safetensors"));
            files.push(tensor_file(path, C::LynxLite, &group, dt, None)?);
        }
    }

    if let Some(rank) = opts.lora_rank {
        let params = lora::dit_lora(&m.dit, rank)?;
        let group: Vec<&Param> = params.iter().collect();
        let path = PathBuf::from("loras").join(lora::file_name(&m.wan_folder, rank));
        files.push(tensor_file(path, C::Lora, &group, dt, None)?);
    }

    Ok(Plan {
        models: m.clone(),
        dtype,
        seed: opts.seed,
        files,
    })
}
