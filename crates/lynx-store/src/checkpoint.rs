//! [`Checkpoint`]: the tensors of a checkpoint file (or a sharded set) by name, read
//! on demand from the memory-mapped file; [`Checkpoint::build`], the one way every
//! model is made.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use burn::tensor::{DType, Device, Tensor, TensorCreationOptions, TensorData, bf16, f16};
use memmap2::Mmap;

use lynx_core::{Error, Result};

use crate::Loader;
use crate::read;

struct Entry {
    file: usize,
    /// `None` for dtypes burn has no element type for (sub-byte floats, complex).
    dtype: Option<DType>,
    /// The dtype as the file names it, for error messages.
    file_dtype: String,
    shape: Vec<usize>,
    /// Byte range of the data inside the memory-mapped file.
    range: (usize, usize),
}

/// A memory-mapped checkpoint file (safetensors, or a PyTorch archive whose tensors
/// are stored uncompressed).
struct Backing {
    path: PathBuf,
    mmap: Mmap,
}

impl Backing {
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; a checkpoint modified while loaded is the
        // user's to avoid, as with every mmap-based loader.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            mmap,
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

/// A set of named tensors on disk.
pub struct Checkpoint {
    pub(crate) path: PathBuf,
    files: Vec<Backing>,
    entries: BTreeMap<String, Entry>,
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
    /// Opens a checkpoint: a `.safetensors` file, a `*.safetensors.index.json` shard
    /// index, a PyTorch `.pth`/`.pt`/`.bin` archive, or a folder holding exactly one of
    /// these (an index is preferred over its shards).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            return Self::open(find_in_dir(path)?);
        }
        if !path.exists() {
            return Err(Error::MissingFile {
                path: path.to_path_buf(),
                hint: "no such file".into(),
            });
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let mut ckpt = Checkpoint {
            path: path.to_path_buf(),
            files: Vec::new(),
            entries: BTreeMap::new(),
            synthetic: None,
            loras: None,
            recording: None,
        };
        if name.ends_with(".index.json") {
            ckpt.add_index(path)?;
        } else if name.ends_with(".safetensors") {
            ckpt.add_safetensors(path)?;
        } else if [".pth", ".pt", ".bin", ".ckpt"]
            .iter()
            .any(|e| name.ends_with(e))
        {
            ckpt.add_pytorch(path)?;
        } else {
            return Err(Error::format(
                path,
                "checkpoint",
                "expected .safetensors, .safetensors.index.json or .pth",
            ));
        }
        Ok(ckpt)
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

    /// Reads `key` in the dtype the file stores it in.
    pub fn read(&self, key: &str) -> Result<TensorData> {
        let entry = self.entry(key)?;
        let path = self.files[entry.file].path();
        let dtype = self.entry_dtype(key, entry)?;
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
        self.check_float(key, entry)?;
        self.read(key)?
            .convert_dtype(DType::F32)
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
        let row_bytes = cols * read::float_size(self.entry_dtype(key, entry)?).unwrap_or(0);
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
            ranges: impl IntoIterator<Item = (usize, usize)>,
            from: DType,
            numel: usize,
            shape: Vec<usize>,
        ) -> TensorData {
            let mut out = Vec::<T>::with_capacity(numel);
            for range in ranges {
                read::copy_converted(mmap, range, from, &mut out);
            }
            TensorData::new(out, shape)
        }
        let mmap = &self.files[entry.file].mmap;
        let from = entry.dtype.unwrap_or(DType::F32);
        Ok(match dtype {
            DType::F32 => gather::<f32>(mmap, ranges, from, numel, shape),
            DType::BF16 => gather::<bf16>(mmap, ranges, from, numel, shape),
            DType::F16 => gather::<f16>(mmap, ranges, from, numel, shape),
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
        match entry.dtype {
            Some(DType::F32 | DType::F16 | DType::BF16 | DType::F64) => Ok(()),
            _ => Err(Error::Dtype {
                path: self.files[entry.file].path().to_path_buf(),
                key: key.into(),
                dtype: entry.file_dtype.clone(),
            }),
        }
    }

    fn add_safetensors(&mut self, path: &Path) -> Result<()> {
        let backing = Backing::open(path)?;
        let (header_len, metadata) = safetensors::SafeTensors::read_metadata(&backing.mmap)
            .map_err(|e| Error::format(path, "safetensors", describe_st_error(&e)))?;
        let data_start = 8 + header_len;
        let index = self.files.len();
        for (name, info) in metadata.tensors() {
            let (dtype, file_dtype) = st_dtype(info.dtype);
            let (a, b) = info.data_offsets;
            let old = self.entries.insert(
                name.clone(),
                Entry {
                    file: index,
                    dtype,
                    file_dtype,
                    shape: info.shape.clone(),
                    range: (data_start + a, data_start + b),
                },
            );
            if old.is_some() {
                return Err(Error::format(
                    path,
                    "safetensors shard",
                    format!("tensor `{name}` is also stored in another shard"),
                ));
            }
        }
        self.files.push(backing);
        Ok(())
    }

    fn add_index(&mut self, index_path: &Path) -> Result<()> {
        #[derive(serde::Deserialize)]
        struct Index {
            weight_map: HashMap<String, String>,
        }
        let text = std::fs::read_to_string(index_path).map_err(|e| Error::io(index_path, e))?;
        let index: Index =
            serde_json::from_str(&text).map_err(|e| Error::format(index_path, "shard index", e))?;
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let shards: BTreeSet<&String> = index.weight_map.values().collect();
        for shard in shards {
            let shard_path = dir.join(shard);
            if !shard_path.is_file() {
                return Err(Error::MissingFile {
                    path: shard_path,
                    hint: format!("the shard index {} lists it", index_path.display()),
                });
            }
            self.add_safetensors(&shard_path)?;
        }
        for (key, shard) in &index.weight_map {
            match self.entries.get(key) {
                Some(e) if self.files[e.file].path() == dir.join(shard) => {}
                _ => {
                    return Err(Error::format(
                        index_path,
                        "shard index",
                        format!("it maps `{key}` to {shard}, which does not hold it"),
                    ));
                }
            }
        }
        if self.entries.len() != index.weight_map.len() {
            let extra = self
                .entries
                .keys()
                .find(|k| !index.weight_map.contains_key(*k))
                .cloned()
                .unwrap_or_default();
            return Err(Error::format(
                index_path,
                "shard index",
                format!("the shards hold `{extra}`, which the index does not list"),
            ));
        }
        Ok(())
    }

    fn add_pytorch(&mut self, path: &Path) -> Result<()> {
        let backing = Backing::open(path)?;
        let tensors = crate::pth::read_index(&backing.mmap, path)?;
        let index = self.files.len();
        for t in tensors {
            let (dtype, file_dtype) = pt_dtype(t.dtype);
            let range = (t.start as usize, t.end as usize);
            let old = self.entries.insert(
                t.name.clone(),
                Entry {
                    file: index,
                    dtype,
                    file_dtype,
                    shape: t.shape,
                    range,
                },
            );
            if old.is_some() {
                return Err(Error::format(
                    path,
                    "PyTorch",
                    format!("tensor `{}` appears twice", t.name),
                ));
            }
        }
        self.files.push(backing);
        Ok(())
    }
}

fn find_in_dir(dir: &Path) -> Result<PathBuf> {
    let read = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut names: Vec<PathBuf> = read.filter_map(|e| e.ok().map(|e| e.path())).collect();
    names.sort();
    let with = |suffix: &str| -> Vec<PathBuf> {
        names
            .iter()
            .filter(|p| p.to_str().is_some_and(|s| s.ends_with(suffix)))
            .cloned()
            .collect()
    };
    for suffix in [".safetensors.index.json", ".safetensors", ".pth"] {
        let found = with(suffix);
        match found.len() {
            0 => continue,
            1 => return Ok(found[0].clone()),
            _ => {
                return Err(Error::format(
                    dir,
                    "model folder",
                    format!(
                        "it holds {} `*{suffix}` files and no shard index; name one file",
                        found.len()
                    ),
                ));
            }
        }
    }
    Err(Error::MissingFile {
        path: dir.to_path_buf(),
        hint: "the folder holds no .safetensors, .safetensors.index.json or .pth file".into(),
    })
}

fn describe_st_error(e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::HeaderTooSmall | E::InvalidHeaderLength => {
            "the file is shorter than its header says (truncated?)".into()
        }
        E::MetadataIncompleteBuffer => {
            "the tensor data does not fill the file as the header says (truncated?)".into()
        }
        other => format!("{other}"),
    }
}

fn st_dtype(d: safetensors::Dtype) -> (Option<DType>, String) {
    use safetensors::Dtype as S;
    let dtype = match d {
        S::F32 => Some(DType::F32),
        S::F16 => Some(DType::F16),
        S::BF16 => Some(DType::BF16),
        S::F64 => Some(DType::F64),
        S::I64 => Some(DType::I64),
        S::I32 => Some(DType::I32),
        S::I16 => Some(DType::I16),
        S::I8 => Some(DType::I8),
        S::U64 => Some(DType::U64),
        S::U32 => Some(DType::U32),
        S::U16 => Some(DType::U16),
        S::U8 => Some(DType::U8),
        S::BOOL => Some(DType::Bool(burn::tensor::BoolStore::Native)),
        _ => None,
    };
    (dtype, format!("{d:?}").to_lowercase())
}

fn pt_dtype(d: crate::pth::PthDtype) -> (Option<DType>, String) {
    use crate::pth::PthDtype as P;
    let dtype = match d {
        P::F32 => DType::F32,
        P::F16 => DType::F16,
        P::BF16 => DType::BF16,
        P::F64 => DType::F64,
        P::I64 => DType::I64,
        P::I32 => DType::I32,
        P::I16 => DType::I16,
        P::I8 => DType::I8,
        P::U8 => DType::U8,
        P::Bool => DType::Bool(burn::tensor::BoolStore::Native),
    };
    (Some(dtype), d.name().to_string())
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
