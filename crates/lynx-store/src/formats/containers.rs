//! Opening a checkpoint path: a folder, a safetensors file, a shard index, a GGUF file or
//! a PyTorch archive, told apart by their first bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use burn::tensor::DType;
use lynx_core::quant::Encoding;
use lynx_core::{Error, Result};

use super::layout::{self, Layout};
use super::{gguf, scaled};
use crate::entry::{Backing, Entry};

/// The tensors of an opened checkpoint, under the loaders' names.
pub(crate) struct Opened {
    /// The file opened (the one found, for a folder).
    pub path: PathBuf,
    pub files: Vec<Backing>,
    pub entries: BTreeMap<String, Entry>,
    /// Non-tensor blobs stored as tensors (`spiece_model`): file index and byte range.
    pub embedded: BTreeMap<String, (usize, (usize, usize))>,
    pub layout: Layout,
    /// GGUF metadata strings and numbers worth showing (`general.architecture`, …).
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Safetensors,
    Index,
    Gguf,
    Pytorch,
}

/// What the first bytes of `path` say it is.
fn sniff(path: &Path) -> Result<Kind> {
    use std::io::Read;
    let mut head = [0u8; 16];
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]).map_err(|e| Error::io(path, e))? {
            0 => break,
            k => n += k,
        }
    }
    let head = &head[..n];
    if head.starts_with(gguf::MAGIC) {
        return Ok(Kind::Gguf);
    }
    // Safetensors before the others: its 8-byte header length may begin with any byte.
    if n >= 9 && head[8] == b'{' {
        return Ok(Kind::Safetensors);
    }
    if head.starts_with(b"PK\x03\x04") || head.first() == Some(&0x80) {
        return Ok(Kind::Pytorch);
    }
    if head.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        return Ok(Kind::Index);
    }
    // Nothing recognised: the safetensors parser says what is wrong (a short file, a
    // bad header).
    Ok(Kind::Safetensors)
}

/// Opens `path` (a file, or a folder holding one checkpoint).
pub(crate) fn open(path: &Path) -> Result<Opened> {
    if path.is_dir() {
        return open(&find_in_dir(path)?);
    }
    if !path.exists() {
        return Err(Error::MissingFile {
            path: path.to_path_buf(),
            hint: "no such file".into(),
        });
    }
    let mut o = Opened {
        path: path.to_path_buf(),
        files: Vec::new(),
        entries: BTreeMap::new(),
        embedded: BTreeMap::new(),
        layout: Layout::AsStored,
        metadata: BTreeMap::new(),
    };
    match sniff(path)? {
        Kind::Index => add_index(&mut o, path)?,
        Kind::Safetensors => add_safetensors(&mut o, path)?,
        Kind::Gguf => add_gguf(&mut o, path)?,
        Kind::Pytorch => add_pytorch(&mut o, path)?,
    }
    o.layout = layout::detect(o.entries.keys().map(String::as_str));
    let entries = std::mem::take(&mut o.entries);
    o.entries = layout::apply(o.layout, entries).map_err(|(a, b)| {
        Error::format(
            path,
            "checkpoint",
            format!("`{a}` and `{b}` name the same tensor once renamed"),
        )
    })?;
    Ok(o)
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
    for suffix in [".safetensors.index.json", ".safetensors", ".gguf", ".pth"] {
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
        hint: "the folder holds no .safetensors, .safetensors.index.json, .gguf or .pth file"
            .into(),
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

fn st_dtype(d: safetensors::Dtype) -> (Option<DType>, Option<Encoding>, String) {
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
    let encoding = match d {
        S::F8_E4M3 => Some(Encoding::F8_E4M3),
        S::F8_E5M2 => Some(Encoding::F8_E5M2),
        _ => None,
    };
    (dtype, encoding, format!("{d:?}").to_lowercase())
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

fn insert(o: &mut Opened, path: &Path, format: &'static str, name: String, e: Entry) -> Result<()> {
    if o.entries.insert(name.clone(), e).is_some() {
        return Err(Error::format(
            path,
            format,
            format!("tensor `{name}` is stored twice (or also in another shard)"),
        ));
    }
    Ok(())
}

fn add_safetensors(o: &mut Opened, path: &Path) -> Result<()> {
    let backing = Backing::open(path)?;
    let (header_len, metadata) = safetensors::SafeTensors::read_metadata(&backing.mmap)
        .map_err(|e| Error::format(path, "safetensors", describe_st_error(&e)))?;
    let data_start = 8 + header_len;
    let index = o.files.len();
    let mut entries = BTreeMap::new();
    for (name, info) in metadata.tensors() {
        let (dtype, encoding, file_dtype) = st_dtype(info.dtype);
        let (a, b) = info.data_offsets;
        let entry = Entry {
            file: index,
            dtype,
            file_dtype,
            shape: info.shape.clone(),
            range: (data_start + a, data_start + b),
            encoding,
            scale: None,
        };
        entries.insert(name.clone(), entry);
    }
    let entries = scaled::fold(entries, &backing.mmap, path, index, &mut o.embedded)?;
    if let Some(json) = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get("_quantization_metadata"))
    {
        scaled::check_quantization_metadata(json, &entries, path)?;
    }
    o.files.push(backing);
    for (name, e) in entries {
        insert(o, path, "safetensors", name, e)?;
    }
    Ok(())
}

fn add_gguf(o: &mut Opened, path: &Path) -> Result<()> {
    let backing = Backing::open(path)?;
    let header = gguf::read_header(&backing.mmap, path)?;
    let index = o.files.len();
    o.metadata
        .insert("gguf.version".into(), header.version.to_string());
    for (k, v) in &header.metadata {
        let text = match v {
            gguf::Meta::Str(s) if s.len() <= 256 => s.clone(),
            gguf::Meta::Uint(u) => u.to_string(),
            gguf::Meta::Int(i) => i.to_string(),
            gguf::Meta::Float(f) => f.to_string(),
            gguf::Meta::Bool(b) => b.to_string(),
            _ => continue,
        };
        o.metadata.insert(k.clone(), text);
    }
    o.files.push(backing);
    for t in header.tensors {
        let (dtype, encoding) = match t.encoding {
            Encoding::F32 => (Some(DType::F32), None),
            Encoding::F16 => (Some(DType::F16), None),
            Encoding::BF16 => (Some(DType::BF16), None),
            q => (None, Some(q)),
        };
        let e = Entry {
            file: index,
            dtype,
            file_dtype: t.encoding.name().to_lowercase(),
            shape: t.shape,
            range: t.range,
            encoding,
            scale: None,
        };
        insert(o, path, "GGUF", t.name, e)?;
    }
    Ok(())
}

fn add_index(o: &mut Opened, index_path: &Path) -> Result<()> {
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
        add_safetensors(o, &shard_path)?;
    }
    for (key, shard) in &index.weight_map {
        let scale_of = |k: &str| scaled::is_consumed(k);
        match o.entries.get(key) {
            Some(e) if o.files[e.file].path() == dir.join(shard) => {}
            None if scale_of(key) => {}
            _ => {
                return Err(Error::format(
                    index_path,
                    "shard index",
                    format!("it maps `{key}` to {shard}, which does not hold it"),
                ));
            }
        }
    }
    if let Some(extra) = o
        .entries
        .keys()
        .find(|k| !index.weight_map.contains_key(*k))
    {
        return Err(Error::format(
            index_path,
            "shard index",
            format!("the shards hold `{extra}`, which the index does not list"),
        ));
    }
    Ok(())
}

fn add_pytorch(o: &mut Opened, path: &Path) -> Result<()> {
    let backing = Backing::open(path)?;
    let tensors = crate::pth::read_index(&backing.mmap, path)?;
    let index = o.files.len();
    o.files.push(backing);
    for t in tensors {
        let (dtype, file_dtype) = pt_dtype(t.dtype);
        let e = Entry {
            file: index,
            dtype,
            file_dtype,
            shape: t.shape,
            range: (t.start as usize, t.end as usize),
            encoding: None,
            scale: None,
        };
        insert(o, path, "PyTorch", t.name, e)?;
    }
    Ok(())
}
