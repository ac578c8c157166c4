//! [`Checkpoint`]: the tensors of a checkpoint file (or a sharded set) by name, read
//! on demand from the memory-mapped file; [`Checkpoint::build`], the one way every
//! model is made.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::{DType, Device, Tensor, TensorCreationOptions, TensorData, bf16, f16};
use memmap2::Mmap;

use lynx_core::quant::{Encoding, QuantTensor};
use lynx_core::{Error, Result};

use crate::Loader;
use crate::entry::{Backing, Entry};
use crate::formats::{self, Layout};
use crate::read;

/// A set of named tensors on disk.
pub struct Checkpoint {
    pub(crate) path: PathBuf,
    files: Vec<Backing>,
    entries: BTreeMap<String, Entry>,
    /// Blobs stored as tensors that are not weights (`spiece_model`).
    embedded: BTreeMap<String, (usize, (usize, usize))>,
    layout: Layout,
    metadata: BTreeMap<String, String>,
    /// Standard deviation of the random tensors a synthetic checkpoint hands out.
    pub(crate) synthetic: Option<f64>,
    /// LoRAs fused into the tensors as they are read ([`Checkpoint::set_loras`]).
    loras: Option<std::sync::Arc<crate::lora::LoraSet>>,
    /// A [recording](Checkpoint::recording) checkpoint's declared shapes.
    pub(crate) recording: Option<BTreeMap<String, Vec<usize>>>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("path", &self.path)
            .field("files", &self.files.len())
            .field("tensors", &self.entries.len())
            .finish()
    }
}

impl Checkpoint {
    /// Opens a checkpoint: a safetensors file (f32/f16/bf16, fp8, ComfyUI scaled fp8), a
    /// `*.safetensors.index.json` shard index, a GGUF file, a PyTorch archive, or a folder
    /// holding exactly one of these (an index is preferred over its shards). The format
    /// and the key layout (diffusers, or Wan's native DiT/VAE names, with or without
    /// ComfyUI's `model.diffusion_model.`, or the names of Wan's own T5 encoder) are read from the content, never the name;
    /// keys are presented under the diffusers names (see [`crate::formats`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let opened = formats::open(path.as_ref())?;
        Ok(Checkpoint {
            path: opened.path,
            files: opened.files,
            entries: opened.entries,
            embedded: opened.embedded,
            layout: opened.layout,
            metadata: opened.metadata,
            synthetic: None,
            loras: None,
            recording: None,
        })
    }

    /// A checkpoint with no file behind it that hands every requested tensor out as
    /// normal noise of standard deviation `std`, in the shape the model asks for. For
    /// benchmarks of real model widths without the weights; [`Loader::has`] answers
    /// `false` and [`Loader::shape`] `None`, so optional tensors are left out.
    pub fn synthetic(std: f64) -> Self {
        Checkpoint {
            path: PathBuf::from("<synthetic random weights>"),
            files: Vec::new(),
            entries: BTreeMap::new(),
            embedded: BTreeMap::new(),
            layout: Layout::AsStored,
            metadata: BTreeMap::new(),
            synthetic: Some(std),
            loras: None,
            recording: None,
        }
    }

    /// Fuses `loras` into every tensor they change as the tensor is read through a
    /// [`Loader`] (resident or streamed), in f32 before the conversion to the run dtype.
    /// The set is checked against this checkpoint's keys and shapes first
    /// ([`crate::lora::LoraSet::check`]); returns the LoRA keys skipped as unmatched.
    /// An empty set takes the LoRAs away.
    pub fn set_loras(&mut self, mut loras: crate::lora::LoraSet) -> Result<Vec<String>> {
        let skipped = loras.check(self)?;
        self.loras = (!loras.is_empty()).then(|| std::sync::Arc::new(loras));
        Ok(skipped)
    }

    /// The LoRAs fused as tensors are read, if any.
    pub fn loras(&self) -> Option<&crate::lora::LoraSet> {
        self.loras.as_deref()
    }

    /// The path this checkpoint was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All tensor names, sorted (a recording checkpoint's declared ones).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        let declared = self.recording.iter().flat_map(|d| d.keys());
        self.entries.keys().chain(declared).map(String::as_str)
    }

    /// Number of tensors in files (none for a synthetic or recording checkpoint).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the checkpoint holds no tensor in a file (as a synthetic or recording
    /// one): then there is nothing to check a config against.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `key` is present (declared, for a recording checkpoint).
    pub fn contains(&self, key: &str) -> bool {
        self.shape(key).is_some()
    }

    /// The shape of `key` from the file header (or as declared to a recording
    /// checkpoint).
    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        match self.entries.get(key) {
            Some(e) => Some(e.shape.as_slice()),
            None => self.recording.as_ref()?.get(key).map(Vec::as_slice),
        }
    }

    /// The file that holds `key` (a shard, for sharded checkpoints).
    pub fn file_of(&self, key: &str) -> Option<&Path> {
        self.entries.get(key).map(|e| self.files[e.file].path())
    }

    fn entry(&self, key: &str) -> Result<&Entry> {
        self.entries.get(key).ok_or_else(|| Error::MissingKey {
            path: self.path.clone(),
            key: key.to_string(),
        })
    }

    /// The dtype of `entry` if burn has one, else an [`Error::Dtype`] naming the file's.
    fn entry_dtype(&self, key: &str, entry: &Entry) -> Result<DType> {
        entry.dtype.ok_or_else(|| Error::Dtype {
            path: self.files[entry.file].path().to_path_buf(),
            key: key.into(),
            dtype: entry.file_dtype.clone(),
        })
    }

    /// Reads `key` in the dtype the file stores it in. Tensors lynx-rs decodes itself
    /// (fp8, GGUF blocks, scaled) have no such dtype: read them with
    /// [`Checkpoint::read_as`] or [`Checkpoint::quantized`].
    pub fn read(&self, key: &str) -> Result<TensorData> {
        let entry = self.entry(key)?;
        let path = self.files[entry.file].path();
        let dtype = match entry.encoding {
            None => self.entry_dtype(key, entry)?,
            Some(_) => {
                return Err(Error::format(
                    path,
                    "checkpoint",
                    format!(
                        "tensor `{key}` is stored as {}, which has no burn dtype: read it \
                         decoded (`read_as`) or kept encoded (`quantized`)",
                        self.describe_encoding(entry)
                    ),
                ));
            }
        };
        let mmap = &self.files[entry.file].mmap;
        let (start, end) = entry.range;
        // The readers check ranges against the file and sizes against shapes and dtypes;
        // a mismatch here is still an error, not a panic.
        if start > end || end > mmap.len() {
            return Err(Error::format(
                path,
                "checkpoint",
                format!("tensor `{key}` lies outside the file"),
            ));
        }
        let bytes = read::copy_bytes(mmap, entry.range);
        TensorData::try_from_bytes(
            burn::tensor::Bytes::from_bytes_vec(bytes),
            entry.shape.clone(),
            dtype,
        )
        .map_err(|e| Error::format(path, "checkpoint", format!("tensor `{key}`: {e:?}")))
    }

    /// Reads the float tensor `key` to the host as f32 values (row-major), whatever
    /// float dtype the file stores; other dtypes are an [`Error::Dtype`].
    pub fn read_f32(&self, key: &str) -> Result<Vec<f32>> {
        let entry = self.entry(key)?;
        self.read_as(key, DType::F32)?
            .try_into_vec::<f32>()
            .map_err(|e| {
                Error::format(
                    self.files[entry.file].path(),
                    "tensor",
                    format!("`{key}`: {e:?}"),
                )
            })
    }

    /// Reads the float tensor `key` converted to `dtype` (f32, f16 or bf16), in one pass
    /// over the file: the converted tensor is the only copy made, and the file's pages
    /// are released from the process as they are copied.
    pub fn read_as(&self, key: &str, dtype: DType) -> Result<TensorData> {
        let entry = self.entry(key)?;
        self.check_float(key, entry)?;
        let numel = entry.shape.iter().product();
        self.convert(entry, [entry.range], numel, entry.shape.clone(), dtype)
    }

    /// Reads rows `rows` (in that order, repeats allowed) of the 2-D float tensor `key`
    /// as a `[rows.len(), columns]` tensor of `dtype`, touching only those rows of the
    /// file: an embedding lookup without loading the table.
    pub fn read_rows(&self, key: &str, rows: &[usize], dtype: DType) -> Result<TensorData> {
        let entry = self.entry(key)?;
        self.check_float(key, entry)?;
        let path = self.files[entry.file].path();
        let &[n, cols] = entry.shape.as_slice() else {
            return Err(Error::Shape {
                path: path.to_path_buf(),
                key: key.into(),
                expected: vec![0, 0],
                found: entry.shape.clone(),
            });
        };
        if let Some(&bad) = rows.iter().find(|&&r| r >= n) {
            return Err(Error::input(format!(
                "row {bad} of `{key}` in {} asked for; it has {n} rows",
                path.display()
            )));
        }
        let row_bytes = match entry.encoding {
            Some(enc) => enc.row_bytes(cols).ok_or_else(|| {
                Error::format(
                    path,
                    "checkpoint",
                    format!(
                        "rows of `{key}` ({cols} values) are not whole {} blocks",
                        enc.name()
                    ),
                )
            })?,
            None => cols * read::float_size(self.entry_dtype(key, entry)?).unwrap_or(0),
        };
        let start = entry.range.0;
        let ranges = rows
            .iter()
            .map(|&r| (start + r * row_bytes, start + (r + 1) * row_bytes));
        self.convert(
            entry,
            ranges,
            rows.len() * cols,
            vec![rows.len(), cols],
            dtype,
        )
    }

    /// Copies `ranges` of `entry`'s file, converted to `dtype`, into one tensor.
    fn convert(
        &self,
        entry: &Entry,
        ranges: impl IntoIterator<Item = (usize, usize)>,
        numel: usize,
        shape: Vec<usize>,
        dtype: DType,
    ) -> Result<TensorData> {
        fn gather<T: read::Target + burn::tensor::Element>(
            mmap: &Mmap,
            ranges: Vec<(usize, usize)>,
            entry: &Entry,
            numel: usize,
            shape: Vec<usize>,
        ) -> TensorData {
            let mut out = Vec::<T>::with_capacity(numel);
            for range in ranges {
                match entry.encoding {
                    Some(enc) => read::copy_decoded(mmap, range, enc, entry.scale, &mut out),
                    None => {
                        let from = entry.dtype.unwrap_or(DType::F32);
                        read::copy_converted(mmap, range, from, &mut out)
                    }
                }
            }
            TensorData::new(out, shape)
        }
        let mmap = &self.files[entry.file].mmap;
        let ranges: Vec<(usize, usize)> = ranges.into_iter().collect();
        if let Some(enc) = entry.encoding {
            // Decoding needs whole blocks inside the file (the readers check this; a
            // mismatch is still an error, not a panic).
            let bytes = enc.block().1;
            let bad = ranges
                .iter()
                .any(|&(a, b)| a > b || b > mmap.len() || !(b - a).is_multiple_of(bytes));
            let total: usize = ranges.iter().map(|&(a, b)| b.saturating_sub(a)).sum();
            if bad || enc.byte_len(numel) != Some(total) {
                return Err(Error::format(
                    self.files[entry.file].path(),
                    "checkpoint",
                    format!(
                        "a {} tensor of shape {:?} does not fit its bytes",
                        enc.name(),
                        entry.shape
                    ),
                ));
            }
        }
        Ok(match dtype {
            DType::F32 => gather::<f32>(mmap, ranges, entry, numel, shape),
            DType::BF16 => gather::<bf16>(mmap, ranges, entry, numel, shape),
            DType::F16 => gather::<f16>(mmap, ranges, entry, numel, shape),
            other => {
                return Err(Error::input(format!(
                    "tensors are read as f32, f16 or bf16, not {other:?}"
                )));
            }
        })
    }

    /// Reads `key` onto `device` as a float tensor of `dtype`, checking its rank.
    pub fn tensor<const D: usize>(
        &self,
        key: &str,
        device: &Device,
        dtype: DType,
    ) -> Result<Tensor<D>> {
        let entry = self.entry(key)?;
        if entry.shape.len() != D {
            return Err(Error::Shape {
                path: self.files[entry.file].path().to_path_buf(),
                key: key.into(),
                expected: vec![0; D],
                found: entry.shape.clone(),
            });
        }
        let data = self.read_as(key, dtype)?;
        Ok(Tensor::from_data(
            data,
            TensorCreationOptions::new(device.clone()).with_dtype(dtype),
        ))
    }

    /// Builds a module from this checkpoint: the one way every lynx-rs model is made.
    ///
    /// Checks that `device` computes in `dtype` ([`lynx_core::device::check_dtype`]), runs
    /// `load` (the module's loader, reading its tensors through the [`Loader`]), then
    /// checks the reads: every missing, unused and mis-shaped key is reported together in
    /// one [`Error::Keys`]. On any error the half-built module is dropped.
    pub fn build<M>(
        &self,
        device: &Device,
        dtype: DType,
        load: impl FnOnce(&Loader<'_>) -> Result<M>,
    ) -> Result<M> {
        self.build_at("", device, dtype, load)
    }

    /// [`Checkpoint::build`] for the sub-module under `prefix` (keys `prefix.*`; all
    /// keys for `""`): `load` gets a loader at `prefix`, and only keys under it are
    /// checked for use. How one block of a model is read on its own.
    pub fn build_at<M>(
        &self,
        prefix: &str,
        device: &Device,
        dtype: DType,
        load: impl FnOnce(&Loader<'_>) -> Result<M>,
    ) -> Result<M> {
        lynx_core::device::check_dtype(device, dtype)?;
        let loader = Loader::new(self, device, dtype).at(prefix);
        let module = load(&loader)?;
        loader.finish()?;
        Ok(module)
    }

    /// Runs `load` as [`Checkpoint::build`] does, without reading any tensor: the same
    /// checks of keys and shapes, and the bytes the module's weights would take on the
    /// device in `dtype` (tensors kept in f32 counted as such). Costs no memory: every
    /// read hands back a broadcast view of zeros.
    pub fn measure<M>(
        &self,
        device: &Device,
        dtype: DType,
        load: impl FnOnce(&Loader<'_>) -> Result<M>,
    ) -> Result<u64> {
        self.measure_at("", device, dtype, load)
    }

    /// [`Checkpoint::measure`] for the sub-module under `prefix`.
    pub fn measure_at<M>(
        &self,
        prefix: &str,
        device: &Device,
        dtype: DType,
        load: impl FnOnce(&Loader<'_>) -> Result<M>,
    ) -> Result<u64> {
        lynx_core::device::check_dtype(device, dtype)?;
        let loader = Loader::new(self, device, dtype).at(prefix).validating();
        drop(load(&loader)?);
        let bytes = loader.bytes();
        loader.finish()?;
        Ok(bytes)
    }

    /// The encoding lynx-rs decodes `key` from, when it is not a plain f32/f16/bf16
    /// tensor: fp8, a GGUF block type, or a float with a per-tensor scale.
    pub fn encoding(&self, key: &str) -> Option<Encoding> {
        self.entries.get(key).and_then(|e| e.encoding)
    }

    /// The per-tensor scale folded into `key` (ComfyUI's scaled fp8), if any.
    pub fn scale(&self, key: &str) -> Option<f32> {
        self.entries.get(key).and_then(|e| e.scale)
    }

    /// Bytes `key` takes in the file (its encoded size).
    pub fn stored_bytes(&self, key: &str) -> Option<u64> {
        self.entries
            .get(key)
            .map(|e| e.range.1.saturating_sub(e.range.0) as u64)
    }

    /// The key layout the file was found in (its keys are presented renamed).
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// A GGUF metadata value (strings and integers), e.g. `general.architecture`.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// The bytes of a blob stored as a tensor that is not a weight: `spiece_model`, the
    /// sentencepiece model ComfyUI's UMT5 files carry.
    pub fn embedded(&self, name: &str) -> Option<Vec<u8>> {
        let &(file, (a, b)) = self.embedded.get(name)?;
        self.files[file].mmap.get(a..b).map(<[u8]>::to_vec)
    }

    /// `key` kept in its file's encoding (fp8 bytes and scale, GGUF blocks), copied out
    /// of the file once; `Ok(None)` for plain f32/f16/bf16 tensors.
    pub fn quantized(&self, key: &str) -> Result<Option<QuantTensor>> {
        let entry = self.entry(key)?;
        let Some(enc) = entry.encoding else {
            return Ok(None);
        };
        let mmap = &self.files[entry.file].mmap;
        let (a, b) = entry.range;
        let bad = || {
            Error::format(
                self.files[entry.file].path(),
                "checkpoint",
                format!(
                    "`{key}`: a {} tensor of shape {:?} does not fit its bytes, or its rows \
                     are not whole blocks",
                    enc.name(),
                    entry.shape
                ),
            )
        };
        if a > b || b > mmap.len() {
            return Err(bad());
        }
        let bytes: Arc<[u8]> = Arc::from(read::copy_bytes(mmap, entry.range));
        QuantTensor::new(bytes, enc, entry.scale, entry.shape.clone())
            .map(Some)
            .ok_or_else(bad)
    }

    fn describe_encoding(&self, entry: &Entry) -> String {
        match entry.scale {
            Some(s) => format!("{} × scale {s}", entry.file_dtype),
            None => entry.file_dtype.clone(),
        }
    }

    /// Whether any key starts with `prefix`.
    pub fn has_prefix(&self, prefix: &str) -> bool {
        let starts = |k: Option<&String>| k.is_some_and(|k| k.starts_with(prefix));
        let declared = self
            .recording
            .as_ref()
            .map(|d| d.range(prefix.to_string()..));
        starts(
            self.entries
                .range(prefix.to_string()..)
                .next()
                .map(|(k, _)| k),
        ) || starts(declared.and_then(|mut r| r.next()).map(|(k, _)| k))
    }

    /// The standard deviation of a [`Checkpoint::synthetic`] checkpoint's tensors.
    pub(crate) fn synthetic_std(&self) -> Option<f64> {
        self.synthetic
    }

    fn check_float(&self, key: &str, entry: &Entry) -> Result<()> {
        if entry.encoding.is_some() {
            return Ok(());
        }
        match entry.dtype {
            Some(DType::F32 | DType::F16 | DType::BF16 | DType::F64) => Ok(()),
            _ => Err(Error::Dtype {
                path: self.files[entry.file].path().to_path_buf(),
                key: key.into(),
                dtype: entry.file_dtype.clone(),
            }),
        }
    }
}

/// Opens the checkpoint at `path` and builds a module from it with
/// [`Checkpoint::build`].
pub fn load_module<M>(
    path: impl AsRef<Path>,
    device: &Device,
    dtype: DType,
    load: impl FnOnce(&Loader<'_>) -> Result<M>,
) -> Result<M> {
    Checkpoint::open(path)?.build(device, dtype, load)
}
