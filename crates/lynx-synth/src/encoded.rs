//! The synthetic DiT as the single files users hold: the same records as the diffusers
//! shards ([`walk::dit_as`]), renamed to native Wan keys
//! ([`lynx_store::formats::layout::dit_native_key`]) and written in another encoding per
//! record, with the same random values (each tensor seeded by its diffusers key, as the
//! shards are).
//!
//! | [`DitEncoding`] | file | each record |
//! |---|---|---|
//! | `Fp8` | bare native keys (as Kijai's `*_fp8_e4m3fn.safetensors`) | a rank-2 `blocks.N.*` matrix read in the model dtype → `F8_E4M3` (value = `w.float()`); other model-dtype records BF16; records read in f32 F32 |
//! | `Fp8Scaled` | `model.diffusion_model.` keys (as Comfy-Org's `*_fp8_scaled.safetensors`) | the same matrices as `F8_E4M3` of `w / s` with `<layer>.scale_weight` `s` = max \|w\| / 448 (F32, shape `[]`), and the `scaled_fp8` marker (empty `F8_E4M3`) |
//! | `Q8_0`, `Q4KM` | GGUF v3, bare native keys (as city96's `Wan2.1-T2V-*-gguf`) | [`gguf_type`] |
//!
//! fp8 rounds to nearest, ties to even, saturating at ±448 ([`quantize::e4m3`]).

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::Path;

use burn::tensor::{DType, bf16, f16};
use lynx_core::{Error, Result};
use lynx_dit::WanConfig;
use lynx_store::formats::layout::dit_native_key;
use lynx_store::output::StagedPath;
use lynx_store::safetensors_io::{Dtype, Layout, SafetensorsWriter, TensorSpec};

use crate::fill::{CHUNK_ELEMS, Init, Xoshiro256pp, fill_chunk};
use crate::{quantize, walk};

/// An encoding of the synthetic DiT in one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DitEncoding {
    /// `float8_e4m3fn` matrices, bare native keys.
    Fp8,
    /// ComfyUI's scaled fp8, `model.diffusion_model.` keys.
    Fp8Scaled,
    /// GGUF, city96's Q8_0 recipe.
    Q8_0,
    /// GGUF, city96's Q4_K_M recipe.
    Q4KM,
}

impl DitEncoding {
    /// Every encoding.
    pub const ALL: [DitEncoding; 4] = [Self::Fp8, Self::Fp8Scaled, Self::Q8_0, Self::Q4KM];

    /// The name `--encoding` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fp8 => "fp8",
            Self::Fp8Scaled => "fp8-scaled",
            Self::Q8_0 => "q8_0",
            Self::Q4KM => "q4_k_m",
        }
    }

    /// The file name for the model named `model` (e.g. `wan2.1_t2v_14B`), as the
    /// files on the Hub are named.
    pub fn file_name(self, model: &str) -> String {
        match self {
            Self::Fp8 => format!("{model}_fp8_e4m3fn.safetensors"),
            Self::Fp8Scaled => format!("{model}_fp8_scaled.safetensors"),
            Self::Q8_0 => format!("{model}-Q8_0.gguf"),
            Self::Q4KM => format!("{model}-Q4_K_M.gguf"),
        }
    }

    /// GGUF's `general.file_type` (`LlamaFileType`), for the GGUF encodings.
    fn gguf_file_type(self) -> Option<u32> {
        match self {
            Self::Q8_0 => Some(7),
            Self::Q4KM => Some(15),
            _ => None,
        }
    }
}

/// How one tensor is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum Stored {
    /// f32.
    F32,
    /// f16.
    F16,
    /// bf16.
    BF16,
    /// `float8_e4m3fn` (with a `scale_weight` in a scaled file).
    F8_E4M3,
    /// GGUF Q8_0.
    Q8_0,
    /// GGUF Q4_K.
    Q4_K,
    /// GGUF Q6_K.
    Q6_K,
}

impl Stored {
    /// The GGML type number.
    fn ggml(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q8_0 => 8,
            Self::Q4_K => 12,
            Self::Q6_K => 14,
            Self::BF16 => 30,
            Self::F8_E4M3 => u32::MAX, // not a GGUF type; never written there
        }
    }

    /// `(values, bytes)` per block.
    fn block(self) -> (u64, u64) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::BF16 => (1, 2),
            Self::F8_E4M3 => (1, 1),
            Self::Q8_0 => (32, 34),
            Self::Q4_K => (256, 144),
            Self::Q6_K => (256, 210),
        }
    }

    /// Bytes of `numel` values (a whole number of blocks).
    fn bytes(self, numel: u64) -> u64 {
        let (v, b) = self.block();
        numel / v * b
    }
}

/// One tensor of an encoded DiT file.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedTensor {
    /// The name in the file.
    pub name: String,
    /// The diffusers key (its random values are seeded by it).
    pub key: String,
    /// PyTorch shape.
    pub shape: Vec<usize>,
    /// How it is stored.
    pub stored: Stored,
    init: Init,
}

impl EncodedTensor {
    fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
}

/// city96's rule for the GGUF type of the Wan DiT tensor `name` (bare native name) of
/// PyTorch `shape` from an f32 source, in `recipe` (`Q8_0` or `Q4KM`), as
/// `city96/ComfyUI-GGUF` makes its files (`tools/convert.py`, then `llama-quantize`
/// patched by `tools/lcpp.patch`; summarised with sources in the fixtures' FORMATS.md §3):
///
/// 1. convert.py: 1-D tensors, tensors of ≤ 1024 elements and `*.modulation` → F32;
///    the 5-D `patch_embedding.weight` → F32 (`fix_5d_tensors.py`); the rest → F16.
/// 2. llama-quantize quantizes 2-D `*weight` tensors except names containing
///    `modulation.`, `patch_embedding.`, `text_embedding.`, `time_projection.`,
///    `time_embedding.`, `img_emb.` or `head.` (`LLM_ARCH_WAN`): to Q8_0 in the Q8_0
///    recipe; in Q4_K_M to Q6_K for `*.v.weight` and `*.ffn.2.weight`
///    (`img_tensor_get_type`), Q4_K for the others.
/// 3. A row (`ne[0]`, the last PyTorch dim) that is not a whole number of blocks (32 for
///    Q8_0, 256 for the K types) falls back to F16.
pub fn gguf_type(name: &str, shape: &[usize], recipe: DitEncoding) -> Stored {
    let numel: usize = shape.iter().product();
    let base =
        if shape.len() == 1 || shape.len() > 4 || numel <= 1024 || name.contains(".modulation") {
            Stored::F32
        } else {
            Stored::F16
        };
    const KEPT: [&str; 7] = [
        "modulation.",
        "patch_embedding.",
        "text_embedding.",
        "time_projection.",
        "time_embedding.",
        "img_emb.",
        "head.",
    ];
    if shape.len() != 2 || !name.ends_with("weight") || KEPT.iter().any(|k| name.contains(k)) {
        return base;
    }
    let target = match recipe {
        DitEncoding::Q8_0 => Stored::Q8_0,
        _ if name.ends_with(".v.weight") || name.ends_with(".ffn.2.weight") => Stored::Q6_K,
        _ => Stored::Q4_K,
    };
    if !(shape[1] as u64).is_multiple_of(target.block().0) {
        return Stored::F16;
    }
    target
}

/// The tensors of the DiT of `c` in `enc`, in the order the diffusers shards hold them.
pub fn dit_tensors(c: &WanConfig, enc: DitEncoding) -> Result<Vec<EncodedTensor>> {
    let model = DType::BF16; // any dtype but f32 tells the f32 records apart
    let mut out = Vec::new();
    for p in walk::dit_as(c, model)? {
        let native = dit_native_key(p.key());
        let shape = p.shape().to_vec();
        let stored = match enc {
            DitEncoding::Fp8 | DitEncoding::Fp8Scaled => {
                if p.record.dtype == DType::F32 {
                    Stored::F32
                } else if shape.len() == 2 && native.starts_with("blocks.") {
                    Stored::F8_E4M3
                } else {
                    Stored::BF16
                }
            }
            DitEncoding::Q8_0 | DitEncoding::Q4KM => gguf_type(&native, &shape, enc),
        };
        let name = match enc {
            DitEncoding::Fp8Scaled => format!("model.diffusion_model.{native}"),
            _ => native,
        };
        out.push(EncodedTensor {
            name,
            key: p.key().to_string(),
            shape,
            stored,
            init: p.init,
        });
    }
    Ok(out)
}

/// The f32 values `t` encodes for `seed`: those an f32 diffusers shard of the same seed
/// holds (drawn in the same chunks from the same stream).
pub fn source_values(t: &EncodedTensor, seed: u64) -> Vec<f32> {
    let mut rng = Xoshiro256pp::for_tensor(seed, &format!("transformer/{}", t.key));
    let mut left = t.numel();
    let mut out = Vec::with_capacity(left as usize);
    let mut buf = Vec::new();
    while left > 0 {
        let n = left.min(CHUNK_ELEMS as u64) as usize;
        fill_chunk(&mut buf, n, t.init, Dtype::F32, &mut rng);
        out.extend(
            buf.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
        left -= n as u64;
    }
    out
}

/// `x` encoded as `stored` (for F8_E4M3: divided by `scale` first).
fn encode(x: &[f32], stored: Stored, scale: f32) -> Vec<u8> {
    let mut out = Vec::with_capacity(stored.bytes(x.len() as u64) as usize);
    match stored {
        Stored::F32 => x.iter().for_each(|v| out.extend(v.to_le_bytes())),
        Stored::F16 => x
            .iter()
            .for_each(|v| out.extend(f16::from_f32(*v).to_le_bytes())),
        Stored::BF16 => x
            .iter()
            .for_each(|v| out.extend(bf16::from_f32(*v).to_le_bytes())),
        Stored::F8_E4M3 => out.extend(x.iter().map(|v| quantize::e4m3(v / scale))),
        Stored::Q8_0 => quantize::q8_0(x, &mut out),
        Stored::Q4_K => quantize::q4_k(x, &mut out),
        Stored::Q6_K => quantize::q6_k(x, &mut out),
    }
    out
}

/// The scale of ComfyUI's scaled fp8 for `x`: max |x| / 448 (1 for all zeros).
fn fp8_scale(x: &[f32]) -> f32 {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    if amax > 0.0 { amax / 448.0 } else { 1.0 }
}

/// The safetensors layout of an fp8 file of `tensors`.
fn safetensors_layout(tensors: &[EncodedTensor], scaled: bool) -> Result<Layout> {
    let dtype = |s: Stored| match s {
        Stored::F32 => Dtype::F32,
        Stored::BF16 => Dtype::BF16,
        Stored::F16 => Dtype::F16,
        _ => Dtype::F8E4M3,
    };
    let mut specs = Vec::new();
    for t in tensors {
        specs.push(TensorSpec::new(&t.name, dtype(t.stored), &t.shape));
        if scaled && t.stored == Stored::F8_E4M3 {
            let layer = t.name.strip_suffix(".weight").unwrap_or(&t.name);
            specs.push(TensorSpec::new(
                format!("{layer}.scale_weight"),
                Dtype::F32,
                &[],
            ));
        }
    }
    if scaled {
        specs.push(TensorSpec::new("scaled_fp8", Dtype::F8E4M3, &[0]));
    }
    let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    Layout::new(specs, Some(&metadata))
}

/// The GGUF header of `tensors` (up to the data, padded) and each tensor's data offset.
fn gguf_header(tensors: &[EncodedTensor], file_type: u32) -> (Vec<u8>, Vec<u64>) {
    fn string(h: &mut Vec<u8>, s: &str) {
        h.extend((s.len() as u64).to_le_bytes());
        h.extend(s.as_bytes());
    }
    let mut h = Vec::new();
    h.extend(b"GGUF");
    h.extend(3u32.to_le_bytes());
    h.extend((tensors.len() as u64).to_le_bytes());
    h.extend(3u64.to_le_bytes());
    string(&mut h, "general.architecture");
    h.extend(8u32.to_le_bytes()); // string
    string(&mut h, "wan");
    for (key, v) in [
        ("general.quantization_version", 2u32),
        ("general.file_type", file_type),
    ] {
        string(&mut h, key);
        h.extend(4u32.to_le_bytes()); // u32
        h.extend(v.to_le_bytes());
    }
    let mut offsets = Vec::with_capacity(tensors.len());
    let mut at = 0u64;
    for t in tensors {
        string(&mut h, &t.name);
        h.extend((t.shape.len() as u32).to_le_bytes());
        for &d in t.shape.iter().rev() {
            h.extend((d as u64).to_le_bytes());
        }
        h.extend(t.stored.ggml().to_le_bytes());
        h.extend(at.to_le_bytes());
        offsets.push(at);
        at = (at + t.stored.bytes(t.numel())).next_multiple_of(GGUF_ALIGN);
    }
    h.resize(h.len().next_multiple_of(GGUF_ALIGN as usize), 0);
    (h, offsets)
}

const GGUF_ALIGN: u64 = 32;

/// The DiT of `c` planned as one file in `enc`: its tensors and exact size.
#[derive(Debug, Clone)]
pub struct DitFile {
    /// The encoding.
    pub encoding: DitEncoding,
    /// The tensors (without the scaled file's `scale_weight` and marker).
    pub tensors: Vec<EncodedTensor>,
    /// Exact file size in bytes.
    pub bytes: u64,
}

impl DitFile {
    /// Plans the DiT of `c` in `enc`, reading nothing.
    pub fn plan(c: &WanConfig, enc: DitEncoding) -> Result<Self> {
        let tensors = dit_tensors(c, enc)?;
        let bytes = match enc.gguf_file_type() {
            None => safetensors_layout(&tensors, enc == DitEncoding::Fp8Scaled)?.file_len(),
            Some(ft) => {
                let (h, _) = gguf_header(&tensors, ft);
                let data = tensors.iter().fold(0u64, |at, t| {
                    at.next_multiple_of(GGUF_ALIGN) + t.stored.bytes(t.numel())
                });
                h.len() as u64 + data
            }
        };
        Ok(Self {
            encoding: enc,
            tensors,
            bytes,
        })
    }

    /// Writes the file to `path` with the values of `seed` (it appears only once
    /// complete); `progress` gets the bytes written so far after each tensor.
    pub fn write(&self, seed: u64, path: &Path, mut progress: impl FnMut(u64)) -> Result<u64> {
        match self.encoding.gguf_file_type() {
            None => self.write_safetensors(seed, path, progress),
            Some(ft) => {
                let staged = StagedPath::new(path)?;
                let file = std::fs::File::create(staged.path())
                    .map_err(|e| Error::io(staged.path(), e))?;
                let mut w = BufWriter::new(file);
                let io = |e| Error::io(path, e);
                let (h, offsets) = gguf_header(&self.tensors, ft);
                w.write_all(&h).map_err(io)?;
                let mut at = 0u64;
                for (t, &off) in self.tensors.iter().zip(&offsets) {
                    w.write_all(&vec![0u8; (off - at) as usize]).map_err(io)?;
                    let bytes = encode(&source_values(t, seed), t.stored, 1.0);
                    w.write_all(&bytes).map_err(io)?;
                    at = off + bytes.len() as u64;
                    progress(h.len() as u64 + at);
                }
                w.flush().map_err(io)?;
                drop(w);
                staged.commit()?;
                Ok(h.len() as u64 + at)
            }
        }
    }

    /// The file's bytes before its data: the safetensors length prefix and header, or
    /// the GGUF header with its padding ([`crate::sparse`] writes only these).
    pub fn header(&self) -> Result<Vec<u8>> {
        Ok(match self.encoding.gguf_file_type() {
            None => {
                let layout =
                    safetensors_layout(&self.tensors, self.encoding == DitEncoding::Fp8Scaled)?;
                let mut h = (layout.header().len() as u64).to_le_bytes().to_vec();
                h.extend(layout.header());
                h
            }
            Some(ft) => gguf_header(&self.tensors, ft).0,
        })
    }

    fn write_safetensors(
        &self,
        seed: u64,
        path: &Path,
        mut progress: impl FnMut(u64),
    ) -> Result<u64> {
        let scaled = self.encoding == DitEncoding::Fp8Scaled;
        let layout = safetensors_layout(&self.tensors, scaled)?;
        let by_name: BTreeMap<&str, &EncodedTensor> =
            self.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
        let order: Vec<String> = layout.tensors().iter().map(|t| t.name.clone()).collect();
        let mut w = SafetensorsWriter::create(path, layout)?;
        let mut done = 0u64;
        for name in &order {
            let bytes = if name == "scaled_fp8" {
                Vec::new()
            } else if let Some(layer) = name.strip_suffix(".scale_weight") {
                let t = by_name[format!("{layer}.weight").as_str()];
                fp8_scale(&source_values(t, seed)).to_le_bytes().to_vec()
            } else {
                let t = by_name[name.as_str()];
                let x = source_values(t, seed);
                let scale = if scaled && t.stored == Stored::F8_E4M3 {
                    fp8_scale(&x)
                } else {
                    1.0
                };
                encode(&x, t.stored, scale)
            };
            w.write_tensor(name, &bytes)?;
            done += bytes.len() as u64;
            progress(done);
        }
        w.finish()
    }
}
