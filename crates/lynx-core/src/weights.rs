//! Reading checkpoints as users have them: a single `.safetensors`, a sharded set behind a
//! `*.safetensors.index.json`, a PyTorch `.pth`, or a folder holding one of these.
//!
//! [`Checkpoint`] lists keys and shapes from the file headers (nothing is read until a
//! tensor is asked for; safetensors files are memory-mapped), so a 14B model is loaded one
//! tensor at a time and never held twice. [`Loader`] builds a module from a checkpoint:
//! each layer asks for its tensors by the PyTorch attribute names, the loader checks the
//! shape from the header before reading, converts f32/f16/bf16/f64 to the model's dtype,
//! and [`Loader::finish`] reports every missing, unused and mis-shaped key in one error.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use burn::module::Param;
use burn::tensor::{DType, Device, Tensor, TensorCreationOptions, TensorData};
use memmap2::Mmap;

use crate::error::{Error, Result};

/// Where one tensor's bytes live.
enum Location {
    /// Byte range inside a memory-mapped safetensors file.
    Range(usize, usize),
    /// A tensor of a PyTorch archive, read on demand.
    Pytorch(pytorch_reader::Tensor),
}

struct Entry {
    file: usize,
    dtype: DType,
    /// The dtype as the file names it, for error messages.
    file_dtype: String,
    shape: Vec<usize>,
    location: Location,
}

enum Backing {
    Safetensors { path: PathBuf, mmap: Mmap },
    Pytorch { path: PathBuf },
}

impl Backing {
    fn path(&self) -> &Path {
        match self {
            Backing::Safetensors { path, .. } | Backing::Pytorch { path } => path,
        }
    }
}

/// A set of named tensors on disk.
pub struct Checkpoint {
    path: PathBuf,
    files: Vec<Backing>,
    entries: BTreeMap<String, Entry>,
    /// Standard deviation of the random tensors a synthetic checkpoint hands out.
    synthetic: Option<f64>,
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
        }
    }

    /// The path this checkpoint was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All tensor names, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the checkpoint holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// The shape of `key` from the file header.
    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        self.entries.get(key).map(|e| e.shape.as_slice())
    }

    /// The file that holds `key` (a shard, for sharded checkpoints).
    pub fn file_of(&self, key: &str) -> Option<&Path> {
        self.entries.get(key).map(|e| self.files[e.file].path())
    }

    /// Reads `key` in the dtype the file stores it in.
    pub fn read(&self, key: &str) -> Result<TensorData> {
        let entry = self.entries.get(key).ok_or_else(|| Error::MissingKey {
            path: self.path.clone(),
            key: key.to_string(),
        })?;
        let backing = &self.files[entry.file];
        let bytes = match (&entry.location, backing) {
            (Location::Range(start, end), Backing::Safetensors { mmap, .. }) => {
                mmap[*start..*end].to_vec()
            }
            (Location::Pytorch(t), _) => t.read().map_err(|e| Error::io(backing.path(), e))?,
            _ => unreachable!("entry location always matches its backing file"),
        };
        Ok(TensorData::from_bytes_vec(
            bytes,
            entry.shape.clone(),
            entry.dtype,
        ))
    }

    /// Reads `key` onto `device` as a float tensor of `dtype`, checking its rank.
    pub fn tensor<const D: usize>(
        &self,
        key: &str,
        device: &Device,
        dtype: DType,
    ) -> Result<Tensor<D>> {
        let entry = self.entries.get(key).ok_or_else(|| Error::MissingKey {
            path: self.path.clone(),
            key: key.to_string(),
        })?;
        if entry.shape.len() != D {
            return Err(Error::Shape {
                path: self.files[entry.file].path().to_path_buf(),
                key: key.into(),
                expected: vec![0; D],
                found: entry.shape.clone(),
            });
        }
        self.check_float(key, entry)?;
        let data = self.read(key)?;
        Ok(Tensor::from_data(
            data.convert_dtype(dtype),
            TensorCreationOptions::new(device.clone()).with_dtype(dtype),
        ))
    }

    /// A [`Loader`] that builds modules from this checkpoint on `device` in `dtype`.
    pub fn loader(&self, device: &Device, dtype: DType) -> Loader<'_> {
        Loader {
            ckpt: self,
            device: device.clone(),
            dtype,
            prefix: String::new(),
            state: Rc::new(RefCell::new(LoadState::default())),
        }
    }

    fn check_float(&self, key: &str, entry: &Entry) -> Result<()> {
        match entry.dtype {
            DType::F32 | DType::F16 | DType::BF16 | DType::F64 => Ok(()),
            _ => Err(Error::Dtype {
                path: self.files[entry.file].path().to_path_buf(),
                key: key.into(),
                dtype: entry.file_dtype.clone(),
            }),
        }
    }

    fn add_safetensors(&mut self, path: &Path) -> Result<()> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; a checkpoint modified while loaded is the
        // user's to avoid, as with every mmap-based loader.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let (header_len, metadata) = safetensors::SafeTensors::read_metadata(&mmap)
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
                    location: Location::Range(data_start + a, data_start + b),
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
        self.files.push(Backing::Safetensors {
            path: path.to_path_buf(),
            mmap,
        });
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
        let reader = crate::pth::open(path)?;
        let index = self.files.len();
        for (name, tensor) in reader {
            let (dtype, file_dtype) = pt_dtype(tensor.dtype());
            self.entries.insert(
                name,
                Entry {
                    file: index,
                    dtype,
                    file_dtype,
                    shape: tensor.shape().to_vec(),
                    location: Location::Pytorch(tensor),
                },
            );
        }
        self.files.push(Backing::Pytorch {
            path: path.to_path_buf(),
        });
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

fn st_dtype(d: safetensors::Dtype) -> (DType, String) {
    use safetensors::Dtype as S;
    let dtype = match d {
        S::F32 => DType::F32,
        S::F16 => DType::F16,
        S::BF16 => DType::BF16,
        S::F64 => DType::F64,
        S::I64 => DType::I64,
        S::I32 => DType::I32,
        S::U8 => DType::U8,
        S::BOOL => DType::Bool(burn::tensor::BoolStore::Native),
        _ => DType::U8,
    };
    (dtype, format!("{d:?}").to_lowercase())
}

fn pt_dtype(d: pytorch_reader::DType) -> (DType, String) {
    use pytorch_reader::DType as P;
    let dtype = match d {
        P::F32 => DType::F32,
        P::F16 => DType::F16,
        P::BF16 => DType::BF16,
        P::F64 => DType::F64,
        P::I64 => DType::I64,
        P::I32 => DType::I32,
        _ => DType::U8,
    };
    (dtype, format!("{d:?}").to_lowercase())
}

#[derive(Default)]
struct LoadState {
    used: BTreeSet<String>,
    ignored: Vec<String>,
    missing: Vec<String>,
    mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
    errors: Vec<Error>,
}

/// Builds modules from a [`Checkpoint`], tracking which keys were used.
///
/// Getters never fail: a missing or mis-shaped tensor is recorded and a tiny placeholder
/// returned, so that one [`Loader::finish`] call can report every problem at once.
/// Loaded modules must be discarded when `finish` fails.
#[derive(Clone)]
pub struct Loader<'a> {
    ckpt: &'a Checkpoint,
    device: Device,
    dtype: DType,
    prefix: String,
    state: Rc<RefCell<LoadState>>,
}

impl<'a> Loader<'a> {
    /// The checkpoint behind this loader.
    pub fn checkpoint(&self) -> &'a Checkpoint {
        self.ckpt
    }

    /// The target device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The float dtype weights are converted to.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The full key of `name` under this loader's prefix.
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// A loader for the sub-module `name` (keys `prefix.name.*`).
    pub fn sub(&self, name: impl std::fmt::Display) -> Loader<'a> {
        Loader {
            prefix: self.key(&name.to_string()),
            ..self.clone()
        }
    }

    /// Whether the tensor `name` exists.
    pub fn has(&self, name: &str) -> bool {
        self.ckpt.contains(&self.key(name))
    }

    /// Whether any tensor lives under the sub-module `name`.
    pub fn has_sub(&self, name: &str) -> bool {
        let p = format!("{}.", self.key(name));
        self.ckpt
            .entries
            .range(p.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&p))
    }

    /// The shape of tensor `name`, if present.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.ckpt.shape(&self.key(name)).map(<[usize]>::to_vec)
    }

    /// Marks keys under this loader starting with `name` as deliberately unused
    /// (e.g. BatchNorm's `num_batches_tracked`).
    pub fn ignore(&self, name: &str) {
        let key = self.key(name);
        self.state.borrow_mut().ignored.push(key);
    }

    /// Records an error found while loading (e.g. an inconsistent config).
    pub fn report(&self, error: Error) {
        self.state.borrow_mut().errors.push(error);
    }

    /// Loads tensor `name` of exactly `shape` in the model dtype.
    pub fn tensor<const D: usize>(&self, name: &str, shape: [usize; D]) -> Tensor<D> {
        self.load(name, Some(shape), self.dtype)
    }

    /// Loads tensor `name` of exactly `shape` in f32 whatever the model dtype
    /// (norm weights and modulation tables, which the reference keeps in f32).
    pub fn tensor_f32<const D: usize>(&self, name: &str, shape: [usize; D]) -> Tensor<D> {
        self.load(name, Some(shape), DType::F32)
    }

    /// Loads tensor `name` of rank `D` with the shape the file gives.
    pub fn tensor_any<const D: usize>(&self, name: &str) -> Tensor<D> {
        self.load(name, None, self.dtype)
    }

    /// [`Loader::tensor`] wrapped as a parameter.
    pub fn param<const D: usize>(&self, name: &str, shape: [usize; D]) -> Param<Tensor<D>> {
        Param::from_tensor(self.tensor(name, shape))
    }

    /// [`Loader::tensor_f32`] wrapped as a parameter.
    pub fn param_f32<const D: usize>(&self, name: &str, shape: [usize; D]) -> Param<Tensor<D>> {
        Param::from_tensor(self.tensor_f32(name, shape))
    }

    fn load<const D: usize>(
        &self,
        name: &str,
        shape: Option<[usize; D]>,
        dtype: DType,
    ) -> Tensor<D> {
        let key = self.key(name);
        if let (Some(std), Some(shape)) = (self.ckpt.synthetic, shape) {
            let dist = burn::tensor::Distribution::Normal(0.0, std);
            return Tensor::<D>::random(shape, dist, &self.device).cast(dtype);
        }
        let placeholder = || Tensor::zeros([1; D], (&self.device, dtype));
        let Some(entry) = self.ckpt.entries.get(&key) else {
            self.state.borrow_mut().missing.push(key);
            return placeholder();
        };
        self.state.borrow_mut().used.insert(key.clone());
        let rank_ok = entry.shape.len() == D;
        let shape_ok = rank_ok && shape.is_none_or(|s| s.as_slice() == entry.shape.as_slice());
        if !shape_ok {
            let expected = shape.map(|s| s.to_vec()).unwrap_or_else(|| vec![0; D]);
            self.state
                .borrow_mut()
                .mismatched
                .push((key, expected, entry.shape.clone()));
            return placeholder();
        }
        match self.ckpt.tensor::<D>(&key, &self.device, dtype) {
            Ok(t) => t,
            Err(e) => {
                self.state.borrow_mut().errors.push(e);
                placeholder()
            }
        }
    }

    /// Checks that every requested tensor was found with the right shape, and that
    /// every tensor under this loader's prefix was used (or ignored).
    pub fn finish(self) -> Result<()> {
        let mut state = self.state.borrow_mut();
        if let Some(e) = state.errors.drain(..).next() {
            return Err(e);
        }
        let root = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}.", self.prefix)
        };
        let unexpected: Vec<String> = self
            .ckpt
            .keys()
            .filter(|k| k.starts_with(&root))
            .filter(|k| !state.used.contains(*k))
            .filter(|k| !state.ignored.iter().any(|i| k.starts_with(i.as_str())))
            .map(str::to_string)
            .collect();
        if state.missing.is_empty() && unexpected.is_empty() && state.mismatched.is_empty() {
            return Ok(());
        }
        Err(Error::Keys {
            path: self.ckpt.path.clone(),
            missing: std::mem::take(&mut state.missing),
            unexpected,
            mismatched: std::mem::take(&mut state.mismatched),
        })
    }
}
