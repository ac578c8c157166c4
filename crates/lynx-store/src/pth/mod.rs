//! PyTorch `.pth` checkpoints, indexed without running any pickle code and without
//! reading tensor data: for each tensor of the state dict, its dotted key, dtype, shape and
//! the absolute byte range of its data, so the caller can memory-map the file and view
//! tensors in place, as for safetensors.
//!
//! Mirrors `torch.load` (`torch/serialization.py`) for the two formats `torch.save` has
//! written since PyTorch 0.4:
//!
//! * the zip archive of PyTorch ≥ 1.6 (`zip.rs`): `<stem>/data.pkl` plus one STORED
//!   entry `<stem>/data/<key>` per storage, with ZIP64 end records;
//! * the legacy stream of PyTorch 0.4–1.5 (and of `_use_new_zipfile_serialization=False`)
//!   (`legacy.rs`): five pickles, then the raw storages in the order of the key list.
//!
//! The even older tar format (PyTorch < 0.4, early 2018 and before) is recognised and
//! rejected with a sentence saying so: it keeps tensors in a separate binary record and
//! needs a tar reader, and no checkpoint lynx-rs loads was written that way.
//!
//! The pickle (`pickle/`) is read by a restricted unpickler that only knows the
//! opcodes and globals a state dict uses. The object it yields is flattened: nested dicts
//! (and lists or tuples) give dotted keys (`{"model": {"fc.weight": t}}` → `model.fc.weight`,
//! list items by index), non-tensor leaves (epochs, configs) are skipped, and the
//! top level must be a dict. Keys are kept verbatim: DataParallel's `module.` prefix, or
//! a wrapper's `state_dict.` / `model.` prefix, is the caller's to strip.
//!
//! Tensor data is little-endian (files saved big-endian are rejected). torch aligns zip
//! records to 64 bytes, but legacy storages start wherever the previous one ended, so a
//! caller that views `[f32]` in place must check alignment and copy when it is off.
//!
//! Every declared length, offset and count is checked against the file before anything
//! is allocated; containers, nesting, memo and stack are bounded, so a corrupt or hostile
//! file yields an error naming the file and the faulty part, never a panic or a large
//! allocation.

mod chunked;
mod legacy;
mod pickle;
mod zip;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use chunked::Chunked;
use lynx_core::error::{Error, Result};
use pickle::{Heap, Id, Loaded, PickleError, StorageRef, Value};

/// Deepest nesting of dicts/lists walked when flattening.
const MAX_DEPTH: usize = 32;
/// Longest dotted key accepted.
const MAX_NAME: usize = 1024;

/// Element type of a stored tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PthDtype {
    /// `torch.float64`.
    F64,
    /// `torch.float32`.
    F32,
    /// `torch.float16`.
    F16,
    /// `torch.bfloat16`.
    BF16,
    /// `torch.int64`.
    I64,
    /// `torch.int32`.
    I32,
    /// `torch.int16`.
    I16,
    /// `torch.int8`.
    I8,
    /// `torch.uint8` (also untyped storages).
    U8,
    /// `torch.bool`, one byte per element.
    Bool,
}

impl PthDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            PthDtype::F64 | PthDtype::I64 => 8,
            PthDtype::F32 | PthDtype::I32 => 4,
            PthDtype::F16 | PthDtype::BF16 | PthDtype::I16 => 2,
            PthDtype::I8 | PthDtype::U8 | PthDtype::Bool => 1,
        }
    }

    /// The lowercase name (`f32`, `bf16`, …).
    pub fn name(self) -> &'static str {
        match self {
            PthDtype::F64 => "f64",
            PthDtype::F32 => "f32",
            PthDtype::F16 => "f16",
            PthDtype::BF16 => "bf16",
            PthDtype::I64 => "i64",
            PthDtype::I32 => "i32",
            PthDtype::I16 => "i16",
            PthDtype::I8 => "i8",
            PthDtype::U8 => "u8",
            PthDtype::Bool => "bool",
        }
    }
}

/// One tensor of a checkpoint: where its contiguous, little-endian data lies in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PthTensor {
    /// Dotted key, verbatim (e.g. `module.body.0.weight`).
    pub name: String,
    /// Element type.
    pub dtype: PthDtype,
    /// Sizes (empty for a scalar).
    pub shape: Vec<usize>,
    /// Absolute offset of the first byte.
    pub start: u64,
    /// Absolute offset past the last byte; `end - start` is `numel × dtype.size()`.
    pub end: u64,
}

/// Every tensor of the state dict in the `.pth` file at `path`, in the dict's order.
pub fn open(path: &Path) -> Result<Vec<PthTensor>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    index(&mut FileSource { file, len }).map_err(|f| f.into_error(path))
}

/// Same as [`open`] for a file already in memory (e.g. memory-mapped); `path` only names
/// it in errors.
pub fn read_index(bytes: &[u8], path: &Path) -> Result<Vec<PthTensor>> {
    index(&mut SliceSource(bytes)).map_err(|f| f.into_error(path))
}

/// A failure, before the file's path is attached.
#[derive(Debug)]
pub(crate) enum Fail {
    /// Reading failed.
    Io(std::io::Error),
    /// The content is invalid: the reason, one clause.
    Bad(String),
}

impl Fail {
    /// The crate error for `path`.
    fn into_error(self, path: &Path) -> Error {
        match self {
            Fail::Io(e) => Error::io(path, e),
            Fail::Bad(reason) => Error::format(path, "PyTorch", reason),
        }
    }
}

/// A [`Fail::Bad`].
pub(crate) fn bad(reason: impl Into<String>) -> Fail {
    Fail::Bad(reason.into())
}

/// A pickle error as a [`Fail`]; `what` names the pickle (`the pickle `x/data.pkl``),
/// `base` is its offset in the file, `whole` whether the data given to the unpickler
/// ended where the pickle must end.
pub(crate) fn pickle_fail(what: &str, base: u64, e: PickleError, whole: bool) -> Fail {
    match e {
        PickleError::Truncated { pos } => bad(format!(
            "{what} is cut short at byte {}{}",
            base + pos as u64,
            if whole {
                " (a declared length runs past its end, or STOP is missing)"
            } else {
                ""
            }
        )),
        PickleError::Bad { pos, msg } => bad(format!("{what}, byte {}: {msg}", base + pos as u64)),
    }
}

/// Random access to the file being indexed.
pub(crate) trait Source {
    /// Length in bytes.
    fn len(&self) -> u64;
    /// Fills `buf` from `offset`; the range is within [`Source::len`].
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;

    /// `len` bytes from `offset`, checked against the file's length before allocating.
    fn read_vec(&mut self, offset: u64, len: u64, what: &str) -> Result<Vec<u8>, Fail> {
        let file_len = self.len();
        match offset.checked_add(len) {
            Some(end) if end <= file_len => {
                let n = usize::try_from(len).map_err(|_| bad(format!("{what} is too large")))?;
                let mut buf = vec![0; n];
                self.read_at(offset, &mut buf).map_err(Fail::Io)?;
                Ok(buf)
            }
            _ => Err(bad(format!(
                "{what} ({len} bytes at byte {offset}) runs past the end of the \
                 {file_len}-byte file"
            ))),
        }
    }
}

/// A file read with seeks.
struct FileSource {
    file: File,
    len: u64,
}

impl Source for FileSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.file.seek(SeekFrom::Start(offset))?;
        self.file.read_exact(buf)
    }
}

/// A file already in memory.
struct SliceSource<'a>(&'a [u8]);

impl Source for SliceSource<'_> {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| std::io::ErrorKind::UnexpectedEof)?;
        match self.0.get(start..start.saturating_add(buf.len())) {
            Some(s) if s.len() == buf.len() => {
                buf.copy_from_slice(s);
                Ok(())
            }
            _ => Err(std::io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

/// Detects the format and indexes the file.
fn index(src: &mut dyn Source) -> Result<Vec<PthTensor>, Fail> {
    let head = src.read_vec(0, src.len().min(512), "the header")?;
    if head.starts_with(b"PK") {
        zip::index(src)
    } else if head.get(257..262) == Some(b"ustar") {
        Err(bad(
            "it is a tar archive as written by torch.save before PyTorch 0.4, which lynx-rs \
             does not read; load and re-save it with a recent torch",
        ))
    } else if head.is_empty() {
        Err(bad("the file is empty"))
    } else {
        legacy::index(src)
    }
}

/// Gives the absolute byte range `(start, end)` of a storage (or legacy view).
pub(crate) type StorageRanges<'a> = dyn FnMut(&StorageRef) -> Result<(u64, u64), Fail> + 'a;

/// Flattens `loaded.root` and resolves every tensor to a byte range, asking `storage`
/// for the absolute byte range of each storage (or legacy view).
pub(crate) fn tensors(
    loaded: &Loaded,
    storage: &mut StorageRanges<'_>,
    pickle_len: usize,
) -> Result<Vec<PthTensor>, Fail> {
    let Value::Dict(_) = loaded.root else {
        return Err(bad(format!(
            "the pickled object is {}, not a state dict",
            loaded.root.kind()
        )));
    };
    let heap = &loaded.heap;
    let items: usize = heap.seqs.iter().map(Chunked::len).sum::<usize>()
        + heap.dicts.iter().map(Chunked::len).sum::<usize>();
    let mut flat = Flatten {
        heap,
        on_path_seqs: vec![false; heap.seqs.len()],
        on_path_dicts: vec![false; heap.dicts.len()],
        visits_left: items.saturating_mul(2) + 4096,
        name_bytes_left: pickle_len.saturating_mul(4) + (64 << 10),
        // A tensor entry takes a key and a value, at least 16 pickle bytes in practice.
        entries_left: pickle_len / 16 + 1024,
        out: Vec::new(),
    };
    flat.walk(loaded.root, &mut String::new(), 0)?;
    let out = flat.out;
    // Keys must be unique (a dict may repeat one only in a hand-made pickle, and
    // flattening may collide `a.b` with `{"a": {"b": …}}`).
    let mut order: Vec<u32> = (0..out.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| out[a as usize].0.cmp(&out[b as usize].0));
    if let Some(w) = order
        .windows(2)
        .find(|w| out[w[0] as usize].0 == out[w[1] as usize].0)
    {
        let name = &out[w[0] as usize].0;
        return Err(bad(format!("key `{}` appears twice", name.escape_debug())));
    }
    drop(order);
    let mut tensors = Vec::with_capacity(out.len());
    for (name, id) in out {
        let t = &heap.tensors[id as usize];
        let s = &heap.storages[t.storage as usize];
        // Name the tensor too: a storage key (`0`, `17`) alone does not say which weight.
        let range = storage(s).map_err(|f| match f {
            Fail::Bad(reason) => bad(format!("tensor `{}`: {reason}", name.escape_debug())),
            io => io,
        })?;
        tensors.push(resolve(name, t, s, range)?);
    }
    Ok(tensors)
}

/// The byte range of tensor `name` within its storage's absolute range `(s0, s1)`.
fn resolve(
    name: String,
    t: &pickle::TensorRef,
    s: &StorageRef,
    (s0, s1): (u64, u64),
) -> Result<PthTensor, Fail> {
    let shown = name.escape_debug();
    let el = s.dtype.size() as u64;
    let mut shape = Vec::with_capacity(t.shape.len());
    let mut numel: u64 = 1;
    for &d in &t.shape {
        numel = numel
            .checked_mul(d)
            .ok_or_else(|| bad(format!("tensor `{shown}` has too many elements")))?;
        shape.push(
            usize::try_from(d)
                .map_err(|_| bad(format!("tensor `{shown}` has a size too large ({d})")))?,
        );
    }
    if numel > 0 {
        let mut expected: u64 = 1;
        for (&d, &st) in t.shape.iter().zip(&t.stride).rev() {
            if d != 1 && st != expected {
                return Err(bad(format!(
                    "tensor `{shown}` is not contiguous (sizes {:?}, strides {:?})",
                    t.shape, t.stride
                )));
            }
            expected = expected.saturating_mul(d);
        }
    }
    let range = t
        .offset
        .checked_mul(el)
        .and_then(|o| s0.checked_add(o))
        .and_then(|a| Some((a, a.checked_add(numel.checked_mul(el)?)?)))
        .filter(|&(_, b)| b <= s1);
    let Some((start, end)) = range else {
        return Err(bad(format!(
            "tensor `{shown}` ({numel} {} elements at offset {}) runs past its storage \
             `{}` ({} bytes)",
            s.dtype.name(),
            t.offset,
            s.key.escape_debug(),
            s1 - s0
        )));
    };
    Ok(PthTensor {
        name,
        dtype: s.dtype,
        shape,
        start,
        end,
    })
}

/// State of the walk that turns nested containers into dotted keys.
struct Flatten<'h> {
    heap: &'h Heap,
    on_path_seqs: Vec<bool>,
    on_path_dicts: Vec<bool>,
    visits_left: usize,
    name_bytes_left: usize,
    entries_left: usize,
    out: Vec<(String, Id)>,
}

impl Flatten<'_> {
    /// Emits the tensors reachable from `v`, whose key is `name`, `depth` levels down.
    fn walk(&mut self, v: Value, name: &mut String, depth: usize) -> Result<(), Fail> {
        let shown = |name: &str| name.escape_debug().to_string();
        match v {
            Value::Tensor(id) => {
                let (Some(bytes), Some(entries)) = (
                    self.name_bytes_left.checked_sub(name.len()),
                    self.entries_left.checked_sub(1),
                ) else {
                    return Err(bad(
                        "it holds more (or longer) tensor keys than its pickle's size allows",
                    ));
                };
                (self.name_bytes_left, self.entries_left) = (bytes, entries);
                self.out.push((name.clone(), id));
                return Ok(());
            }
            Value::Dict(_) | Value::List(_) | Value::Tuple(_) => {}
            _ => return Ok(()),
        }
        if depth >= MAX_DEPTH {
            return Err(bad(format!(
                "`{}` nests containers deeper than {MAX_DEPTH} levels",
                shown(name)
            )));
        }
        let (on_path, len) = match v {
            Value::Dict(id) => (
                &mut self.on_path_dicts[id as usize],
                self.heap.dicts[id as usize].len(),
            ),
            Value::List(id) | Value::Tuple(id) => (
                &mut self.on_path_seqs[id as usize],
                self.heap.seqs[id as usize].len(),
            ),
            _ => return Ok(()),
        };
        if *on_path {
            return Err(bad(format!("`{}` contains itself", shown(name))));
        }
        *on_path = true;
        let base = name.len();
        for i in 0..len {
            self.visits_left = self
                .visits_left
                .checked_sub(1)
                .ok_or_else(|| bad("its containers are shared too often to flatten into keys"))?;
            let (key, value) = match v {
                Value::Dict(id) => {
                    let (k, value) = self.heap.dicts[id as usize][i];
                    if !matches!(
                        value,
                        Value::Tensor(_) | Value::Dict(_) | Value::List(_) | Value::Tuple(_)
                    ) {
                        continue;
                    }
                    let key = match k {
                        Value::Str(s) => self.heap.strs[s as usize].clone(),
                        Value::Bytes(b) => {
                            String::from_utf8_lossy(&self.heap.blobs[b as usize]).into_owned()
                        }
                        Value::Int(n) => n.to_string(),
                        other => {
                            return Err(bad(format!(
                                "a key under `{}` is {}, not a string",
                                shown(name),
                                other.kind()
                            )));
                        }
                    };
                    (key, value)
                }
                Value::List(id) | Value::Tuple(id) => {
                    (i.to_string(), self.heap.seqs[id as usize][i])
                }
                _ => continue,
            };
            if base > 0 {
                name.push('.');
            }
            name.push_str(&key);
            if name.len() > MAX_NAME {
                return Err(bad(format!(
                    "key `{}…` is longer than {MAX_NAME} bytes",
                    shown(&name[..name.floor_char_boundary(64)])
                )));
            }
            self.walk(value, name, depth + 1)?;
            name.truncate(base);
        }
        match v {
            Value::Dict(id) => self.on_path_dicts[id as usize] = false,
            Value::List(id) | Value::Tuple(id) => self.on_path_seqs[id as usize] = false,
            _ => {}
        }
        Ok(())
    }
}
