//! Writing `.safetensors` files, streamed: the header first, then each tensor's bytes in
//! as many pieces as the caller likes, so that a tensor never has to be in memory whole.
//!
//! Mirrors the file format of Hugging Face's `safetensors` crate (0.7,
//! `safetensors::tensor::serialize`): an 8-byte little-endian header length, a JSON header
//! padded with spaces to a multiple of 8 bytes holding `__metadata__` (if any) and then
//! every tensor in file order, then the tensors' bytes back to back. Tensors are laid out as
//! `serialize` lays them out (descending dtype alignment, then name), so for the same
//! input the output is byte for byte the same (with at most one `__metadata__` entry:
//! `safetensors` keeps the metadata in a `HashMap`, in no fixed order; this module sorts it
//! by key).
//!
//! Files are written to a temporary file beside the target and renamed into place by
//! [`SafetensorsWriter::finish`]; a writer dropped before then (or one that failed)
//! removes its temporary file and leaves nothing at the target path.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::output::StagedPath;
use lynx_core::error::{Error, Result};

/// The element types this module writes, named as in the safetensors header.
///
/// Declared in safetensors' alignment order (the order of its `Dtype` enum), which
/// [`Layout`] uses to place tensors in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dtype {
    /// Booleans, one byte each.
    Bool,
    /// Unsigned 8-bit integers.
    U8,
    /// Signed 8-bit integers.
    I8,
    /// 8-bit floats, E5M2.
    F8E5M2,
    /// 8-bit floats, E4M3.
    F8E4M3,
    /// Signed 16-bit integers.
    I16,
    /// Unsigned 16-bit integers.
    U16,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
    /// Signed 32-bit integers.
    I32,
    /// Unsigned 32-bit integers.
    U32,
    /// IEEE single precision.
    F32,
    /// IEEE double precision.
    F64,
    /// Signed 64-bit integers.
    I64,
    /// Unsigned 64-bit integers.
    U64,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 | Dtype::F8E5M2 | Dtype::F8E4M3 => 1,
            Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::BF16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
        }
    }

    /// The name the safetensors header uses (`"F32"`, `"BF16"`, `"BOOL"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Bool => "BOOL",
            Dtype::U8 => "U8",
            Dtype::I8 => "I8",
            Dtype::F8E5M2 => "F8_E5M2",
            Dtype::F8E4M3 => "F8_E4M3",
            Dtype::I16 => "I16",
            Dtype::U16 => "U16",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I32 => "I32",
            Dtype::U32 => "U32",
            Dtype::F32 => "F32",
            Dtype::F64 => "F64",
            Dtype::I64 => "I64",
            Dtype::U64 => "U64",
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor of a file: its name, element type and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// The tensor's key in the file.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape, outermost dimension first (C order).
    pub shape: Vec<usize>,
}

impl TensorSpec {
    /// A spec from borrowed parts.
    pub fn new(name: impl Into<String>, dtype: Dtype, shape: &[usize]) -> Self {
        Self {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
        }
    }

    /// Number of elements.
    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }

    /// Number of bytes of data.
    pub fn byte_len(&self) -> u64 {
        self.numel() * self.dtype.size() as u64
    }
}

/// Where every tensor of a file goes: the tensors in file order, the header bytes and
/// the file's size. Computing it writes nothing, so it also serves to plan sizes.
#[derive(Debug, Clone)]
pub struct Layout {
    tensors: Vec<TensorSpec>,
    header: Vec<u8>,
    data_len: u64,
}

impl Layout {
    /// Orders `tensors` as `safetensors::serialize` does (descending dtype alignment,
    /// then name) and builds the header. Fails on duplicate names or a tensor named
    /// `__metadata__`.
    pub fn new(
        mut tensors: Vec<TensorSpec>,
        metadata: Option<&BTreeMap<String, String>>,
    ) -> Result<Self> {
        let mut seen = HashSet::with_capacity(tensors.len());
        for t in &tensors {
            if t.name == "__metadata__" {
                return Err(Error::input("a tensor cannot be named `__metadata__`"));
            }
            if !seen.insert(t.name.as_str()) {
                return Err(Error::input(format!(
                    "tensor `{}` is declared twice",
                    t.name
                )));
            }
        }
        tensors.sort_by(|a, b| b.dtype.cmp(&a.dtype).then_with(|| a.name.cmp(&b.name)));

        let mut header = String::from("{");
        let mut first = true;
        if let Some(meta) = metadata {
            header.push_str("\"__metadata__\":");
            header.push_str(&json_string_map(meta));
            first = false;
        }
        let mut offset = 0u64;
        for t in &tensors {
            if !first {
                header.push(',');
            }
            first = false;
            let end = offset + t.byte_len();
            let shape: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
            header.push_str(&format!(
                "{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
                json_string(&t.name),
                t.dtype.name(),
                shape.join(","),
            ));
            offset = end;
        }
        header.push('}');
        let mut header = header.into_bytes();
        header.resize(header.len().next_multiple_of(8), b' ');
        Ok(Self {
            tensors,
            header,
            data_len: offset,
        })
    }

    /// The tensors in the order their bytes follow one another in the file.
    pub fn tensors(&self) -> &[TensorSpec] {
        &self.tensors
    }

    /// The JSON header, padded with spaces to a multiple of 8 bytes.
    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// Bytes of tensor data (the sum of every tensor's size).
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// Size of the whole file: 8 + header + data.
    pub fn file_len(&self) -> u64 {
        8 + self.header.len() as u64 + self.data_len
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

fn json_string_map(map: &BTreeMap<String, String>) -> String {
    serde_json::to_string(map).expect("a string map always serializes")
}

/// Writes one `.safetensors` file, tensor by tensor and piece by piece.
///
/// ```no_run
/// # use lynx_store::safetensors_io::*;
/// # fn main() -> lynx_core::Result<()> {
/// let layout = Layout::new(vec![TensorSpec::new("w", Dtype::F32, &[2, 2])], None)?;
/// let mut w = SafetensorsWriter::create("w.safetensors", layout)?;
/// w.begin_tensor("w")?;
/// w.write_bytes(&[0u8; 8])?;
/// w.write_bytes(&[0u8; 8])?;
/// w.finish()?;
/// # Ok(()) }
/// ```
pub struct SafetensorsWriter {
    path: PathBuf,
    staged: Option<StagedPath>,
    out: Option<BufWriter<File>>,
    layout: Layout,
    /// Index of the tensor being written (or, before `begin_tensor`, of the next one).
    current: usize,
    /// Whether `begin_tensor` was called for `current`.
    open: bool,
    remaining: u64,
}

impl SafetensorsWriter {
    /// Creates the temporary file beside `path` and writes the header of `layout`.
    pub fn create(path: impl AsRef<Path>, layout: Layout) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let staged = StagedPath::new(&path)?;
        let file = File::create(staged.path()).map_err(|e| Error::io(staged.path(), e))?;
        let mut w = Self {
            path,
            staged: Some(staged),
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            layout,
            current: 0,
            open: false,
            remaining: 0,
        };
        let header_len = w.layout.header.len() as u64;
        let mut head = Vec::with_capacity(8 + w.layout.header.len());
        head.extend_from_slice(&header_len.to_le_bytes());
        head.extend_from_slice(&w.layout.header);
        w.raw_write(&head)?;
        Ok(w)
    }

    /// The file's layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The tensor whose bytes come next: the open one while it still expects bytes,
    /// otherwise the next to begin; `None` once every tensor is complete.
    pub fn next_tensor(&self) -> Option<&TensorSpec> {
        if self.open && self.remaining > 0 {
            return self.layout.tensors.get(self.current);
        }
        let next = if self.open {
            self.current + 1
        } else {
            self.current
        };
        self.layout.tensors.get(next)
    }

    /// Starts tensor `name`, which must be the next one in [`Layout::tensors`] order, the
    /// previous one being complete.
    pub fn begin_tensor(&mut self, name: &str) -> Result<&TensorSpec> {
        if self.open {
            if self.remaining > 0 {
                let t = &self.layout.tensors[self.current];
                return Err(Error::input(format!(
                    "{}: tensor `{}` still expects {} of its {} bytes, cannot begin `{name}`",
                    self.path.display(),
                    t.name,
                    self.remaining,
                    t.byte_len()
                )));
            }
            self.current += 1;
            self.open = false;
        }
        let Some(t) = self.layout.tensors.get(self.current) else {
            return Err(Error::input(format!(
                "{}: every declared tensor is written, cannot begin `{name}`",
                self.path.display()
            )));
        };
        if t.name != name {
            return Err(Error::input(format!(
                "{}: expected tensor `{}` next, got `{name}`",
                self.path.display(),
                t.name
            )));
        }
        self.open = true;
        self.remaining = t.byte_len();
        Ok(&self.layout.tensors[self.current])
    }

    /// Appends bytes to the open tensor; fails if they are more than it still expects.
    pub fn write_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        if !self.open {
            return Err(Error::input(format!(
                "{}: write_bytes before begin_tensor",
                self.path.display()
            )));
        }
        if bytes.len() as u64 > self.remaining {
            let t = &self.layout.tensors[self.current];
            return Err(Error::input(format!(
                "{}: tensor `{}` ({} {:?}) is {} bytes; {} more bytes would overrun it by {}",
                self.path.display(),
                t.name,
                t.dtype,
                t.shape,
                t.byte_len(),
                bytes.len(),
                bytes.len() as u64 - self.remaining
            )));
        }
        self.raw_write(bytes)?;
        self.remaining -= bytes.len() as u64;
        Ok(())
    }

    /// [`begin_tensor`](Self::begin_tensor) and [`write_bytes`](Self::write_bytes) for a
    /// tensor given whole; `bytes` must be exactly its size.
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let expected = self.begin_tensor(name)?.byte_len();
        if bytes.len() as u64 != expected {
            return Err(Error::input(format!(
                "{}: tensor `{name}` is {expected} bytes, got {}",
                self.path.display(),
                bytes.len()
            )));
        }
        self.write_bytes(bytes)
    }

    /// Checks that every tensor is complete, flushes and syncs the file and renames it
    /// to the target path. Returns the file's size.
    pub fn finish(mut self) -> Result<u64> {
        let complete = self.current + usize::from(self.open && self.remaining == 0);
        if complete < self.layout.tensors.len() {
            return Err(Error::input(format!(
                "{}: finished with {} tensor(s) incomplete, starting at `{}`",
                self.path.display(),
                self.layout.tensors.len() - complete,
                self.layout.tensors[complete].name
            )));
        }
        let out = self.out.take().expect("present until finish");
        let staged = self.staged.take().expect("present until finish");
        let file = out
            .into_inner()
            .map_err(|e| Error::io(staged.path(), e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(staged.path(), e))?;
        drop(file);
        staged.commit()?;
        Ok(self.layout.file_len())
    }

    fn raw_write(&mut self, bytes: &[u8]) -> Result<()> {
        let out = self.out.as_mut().expect("present until finish");
        out.write_all(bytes).map_err(|e| Error::io(&self.path, e))
    }
}

impl Drop for SafetensorsWriter {
    fn drop(&mut self) {
        // Not finished: close the partial file; dropping the staged path removes it.
        if let Some(out) = self.out.take() {
            drop(out.into_parts());
        }
    }
}

/// Writes a small file in one call: `(name, dtype, shape, bytes)` per tensor, in any
/// order, each `bytes` exactly its tensor's size.
pub fn save(
    path: impl AsRef<Path>,
    tensors: &[(&str, Dtype, &[usize], &[u8])],
    metadata: Option<&BTreeMap<String, String>>,
) -> Result<()> {
    let specs = tensors
        .iter()
        .map(|(name, dtype, shape, _)| TensorSpec::new(*name, *dtype, shape))
        .collect();
    let layout = Layout::new(specs, metadata)?;
    let by_name: BTreeMap<&str, &[u8]> = tensors.iter().map(|(n, _, _, b)| (*n, *b)).collect();
    let order: Vec<String> = layout.tensors().iter().map(|t| t.name.clone()).collect();
    let mut w = SafetensorsWriter::create(path, layout)?;
    for name in &order {
        w.write_tensor(name, by_name[name.as_str()])?;
    }
    w.finish().map(|_| ())
}
