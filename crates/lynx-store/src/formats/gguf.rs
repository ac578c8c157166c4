//! GGUF v2/v3 files (llama.cpp's format, city96's Wan files): the header read with
//! every count, length and size checked against the file before it is used.
//!
//! Layout: `GGUF`, version u32, tensor count u64, metadata count u64; the metadata
//! (key string, type u32, value); the tensor infos (name, n_dims u32, `ne` u64 × n_dims
//! with `ne[0]` the fastest dimension, ggml type u32, offset u64 from the data start);
//! padding to `general.alignment` (default 32); the data. Strings are a u64 length and
//! UTF-8 bytes. The PyTorch shape is `ne` reversed (or the `comfy.gguf.orig_shape.<name>`
//! metadata array when present).
//!
//! Hostile headers fail with an error, never a panic or an allocation sized by an
//! unchecked number: counts are bounded by the bytes left (each item takes at least a
//! few bytes), dims products are checked, tensor ranges must lie inside the file, and a
//! type this crate does not decode is an error naming the tensor and the type.

use std::collections::BTreeMap;
use std::path::Path;

use lynx_core::quant::Encoding;
use lynx_core::{Error, Result};

/// The magic of a GGUF file.
pub(crate) const MAGIC: &[u8; 4] = b"GGUF";

/// Most dimensions a tensor may have (ggml has 4; city96's files add a 5-D one).
const MAX_DIMS: u32 = 8;
/// Deepest nesting of metadata arrays accepted.
const MAX_DEPTH: usize = 4;

/// One tensor of a GGUF file.
#[derive(Debug, Clone)]
pub(crate) struct GgufTensor {
    pub name: String,
    pub encoding: Encoding,
    /// PyTorch order (reversed `ne`).
    pub shape: Vec<usize>,
    /// Byte range in the file.
    pub range: (usize, usize),
}

/// A metadata value kept from the header (scalars and strings; arrays only when they
/// are integer arrays, for `comfy.gguf.orig_shape.*`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Meta {
    Uint(u64),
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Ints(Vec<i64>),
    /// An array of another kind, skipped.
    Other,
}

/// The header of a GGUF file.
#[derive(Debug)]
pub(crate) struct GgufHeader {
    pub version: u32,
    pub metadata: BTreeMap<String, Meta>,
    pub tensors: Vec<GgufTensor>,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, reason: impl ToString) -> Error {
        Error::format(self.path, "GGUF", reason)
    }

    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.left() {
            return Err(self.err(format!(
                "{what} at byte {} needs {n} bytes; the file ends {} bytes later (truncated?)",
                self.pos,
                self.left()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A count of items each at least `min_size` bytes, bounded by the bytes left.
    fn count(&mut self, what: &str, min_size: usize) -> Result<usize> {
        let n = self.u64(what)?;
        let bound = (self.left() / min_size.max(1)) as u64;
        if n > bound {
            return Err(self.err(format!(
                "{what} is {n}, more than the {} bytes left in the file can hold",
                self.left()
            )));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.count(what, 1)?;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err(format!("{what} is not UTF-8")))
    }

    /// Size in bytes of a scalar metadata type, `None` for strings and arrays.
    fn scalar_size(t: u32) -> Option<usize> {
        match t {
            0 | 1 | 7 => Some(1),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        }
    }

    fn value(&mut self, t: u32, key: &str, depth: usize) -> Result<Meta> {
        let what = format!("metadata `{key}`");
        let le = |b: &[u8]| {
            let mut a = [0u8; 8];
            a[..b.len()].copy_from_slice(b);
            u64::from_le_bytes(a)
        };
        Ok(match t {
            0 | 2 | 4 | 10 => {
                let n = Self::scalar_size(t).unwrap_or(1);
                Meta::Uint(le(self.take(n, &what)?))
            }
            1 => Meta::Int(self.u8(&what)? as i8 as i64),
            3 => Meta::Int(le(self.take(2, &what)?) as u16 as i16 as i64),
            5 => Meta::Int(self.u32(&what)? as i32 as i64),
            11 => Meta::Int(self.u64(&what)? as i64),
            6 => Meta::Float(f32::from_bits(self.u32(&what)?) as f64),
            12 => Meta::Float(f64::from_bits(self.u64(&what)?)),
            7 => Meta::Bool(self.u8(&what)? != 0),
            8 => Meta::Str(self.string(&what)?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(self.err(format!("{what}: arrays nested too deep")));
                }
                let inner = self.u32(&what)?;
                let min = Self::scalar_size(inner).unwrap_or(8);
                let n = self.count(&what, min)?;
                match inner {
                    1 | 3 | 5 | 11 => {
                        let mut v = Vec::with_capacity(n);
                        for _ in 0..n {
                            let Meta::Int(i) = self.value(inner, key, depth + 1)? else {
                                unreachable!("signed types decode to Int")
                            };
                            v.push(i);
                        }
                        Meta::Ints(v)
                    }
                    _ => {
                        for _ in 0..n {
                            self.value(inner, key, depth + 1)?;
                        }
                        Meta::Other
                    }
                }
            }
            other => return Err(self.err(format!("{what} has unknown value type {other}"))),
        })
    }
}

/// Reads the header of the GGUF file `buf` (the whole file) at `path`.
pub(crate) fn read_header(buf: &[u8], path: &Path) -> Result<GgufHeader> {
    let mut c = Cursor { buf, pos: 0, path };
    if c.take(4, "the magic")? != MAGIC {
        return Err(c.err("it does not start with `GGUF`"));
    }
    let version = c.u32("the version")?;
    if !(2..=3).contains(&version) {
        return Err(c.err(format!("version {version} (versions 2 and 3 are read)")));
    }
    // Each tensor info takes at least 8 (name length) + 4 + 4 + 8 bytes; each metadata
    // entry at least 8 + 4 + 1.
    let n_tensors = c.count("the tensor count", 24)?;
    let n_meta = c.count("the metadata count", 13)?;
    let mut metadata = BTreeMap::new();
    for _ in 0..n_meta {
        let key = c.string("a metadata key")?;
        let t = c.u32("a metadata type")?;
        let v = c.value(t, &key, 0)?;
        metadata.insert(key, v);
    }
    let alignment = match metadata.get("general.alignment") {
        None => 32,
        Some(Meta::Uint(a)) if *a > 0 && *a <= 1 << 20 && a.is_power_of_two() => *a as usize,
        Some(other) => return Err(c.err(format!("general.alignment is {other:?}"))),
    };
    let mut infos = Vec::with_capacity(n_tensors);
    for _ in 0..n_tensors {
        let name = c.string("a tensor name")?;
        let n_dims = c.u32("a tensor's dimension count")?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(c.err(format!("tensor `{name}` has {n_dims} dimensions")));
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            ne.push(c.u64("a tensor dimension")?);
        }
        let t = c.u32("a tensor type")?;
        let offset = c.u64("a tensor offset")?;
        infos.push((name, ne, t, offset));
    }
    let data_start = c.pos.div_ceil(alignment).checked_mul(alignment);
    let data_start = data_start.ok_or_else(|| c.err("the data start overflows"))?;
    let mut tensors = Vec::with_capacity(infos.len());
    for (name, ne, t, offset) in infos {
        let encoding = Encoding::from_ggml(t).ok_or_else(|| {
            c.err(format!(
                "tensor `{name}` has type {}, which lynx-rs does not decode (supported: F32, \
                 F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)",
                Encoding::ggml_name(t)
            ))
        })?;
        let dims: Option<Vec<usize>> = ne.iter().map(|&d| usize::try_from(d).ok()).collect();
        let numel = dims
            .as_ref()
            .and_then(|d| d.iter().try_fold(1usize, |a, &x| a.checked_mul(x)));
        let (Some(dims), Some(numel)) = (dims, numel) else {
            return Err(c.err(format!("tensor `{name}`: the dimensions {ne:?} overflow")));
        };
        if !dims[0].is_multiple_of(encoding.block().0) {
            return Err(c.err(format!(
                "tensor `{name}`: rows of {} values are not whole {} blocks of {}",
                dims[0],
                encoding.name(),
                encoding.block().0
            )));
        }
        let size = encoding
            .byte_len(numel)
            .ok_or_else(|| c.err(format!("tensor `{name}`: its size overflows")))?;
        let start = usize::try_from(offset)
            .ok()
            .filter(|o| o.is_multiple_of(alignment))
            .and_then(|o| o.checked_add(data_start));
        let end = start.and_then(|s| s.checked_add(size));
        let (Some(start), Some(end)) = (start, end) else {
            return Err(c.err(format!("tensor `{name}`: offset {offset} is invalid")));
        };
        if end > buf.len() {
            return Err(c.err(format!(
                "tensor `{name}` ({} bytes at offset {offset}) ends past the end of the file \
                 ({} bytes; truncated?)",
                size,
                buf.len()
            )));
        }
        let mut shape: Vec<usize> = dims.into_iter().rev().collect();
        if let Some(Meta::Ints(orig)) = metadata.get(&format!("comfy.gguf.orig_shape.{name}")) {
            let orig: Option<Vec<usize>> = orig.iter().map(|&d| usize::try_from(d).ok()).collect();
            let orig_numel = orig
                .as_ref()
                .and_then(|o| o.iter().try_fold(1usize, |a, &x| a.checked_mul(x)));
            match (orig, orig_numel) {
                (Some(o), Some(n)) if n == numel && !o.is_empty() => shape = o,
                _ => {
                    return Err(c.err(format!(
                        "comfy.gguf.orig_shape.{name} does not match the tensor's {numel} values"
                    )));
                }
            }
        }
        tensors.push(GgufTensor {
            name,
            encoding,
            shape,
            range: (start, end),
        });
    }
    Ok(GgufHeader {
        version,
        metadata,
        tensors,
    })
}
