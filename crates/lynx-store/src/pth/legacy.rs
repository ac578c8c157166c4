//! The pre-1.6 ("legacy") `torch.save` format, as `_legacy_save` / `_legacy_load` in
//! `torch/serialization.py` write and read it.
//!
//! The file is a run of pickles followed by raw storage bytes:
//!
//! 1. the magic number `0x1950a86a20f9469cfc6c`,
//! 2. the protocol version `1001`,
//! 3. `sys_info` (`{'protocol_version', 'little_endian', 'type_sizes'}`),
//! 4. the object itself, whose persistent ids are
//!    `('storage', type, root_key, location, numel, view_or_None)`,
//! 5. the list of storage keys,
//!
//! then, for each key of that list in order, an 8-byte little-endian element count and
//! the storage's bytes (`_write_file` / `_set_from_file`). The count must match the
//! pickle's, as torch checks.
//!
//! The pickles are parsed from a prefix of the file that grows until they fit, so a large
//! checkpoint is never read whole.

use std::collections::{HashMap, HashSet};

use super::pickle::{self, Loaded, PidForm, StorageRef, Value};
use super::{Fail, PthDtype, PthTensor, Source, bad};

/// `torch.serialization.MAGIC_NUMBER`, little-endian.
const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
/// `torch.serialization.PROTOCOL_VERSION`.
const PROTOCOL_VERSION: i64 = 1001;
/// First prefix read; it grows fourfold while the pickles run past it.
const FIRST_READ: u64 = 1 << 20;

/// The parsed pickles at the head of the file.
struct Head {
    main: Loaded,
    keys: Vec<String>,
    /// Where the storage records start.
    end: u64,
}

/// Why the head could not be parsed.
enum HeadError {
    /// The pickles run past the prefix read so far.
    Short,
    /// A real error.
    Fail(Fail),
}

/// Every tensor of the state dict in the legacy-format file `src`.
pub(crate) fn index(src: &mut dyn Source) -> Result<Vec<PthTensor>, Fail> {
    let len = src.len();
    let mut want = len.min(FIRST_READ);
    let head = loop {
        let buf = src.read_vec(0, want, "the pickles")?;
        match read_head(&buf, want == len) {
            Ok(head) => break head,
            Err(HeadError::Short) => want = len.min(want.saturating_mul(4)),
            Err(HeadError::Fail(f)) => return Err(f),
        }
    };

    // The first reference to a root key fixes its type and size, as in torch.
    let mut roots: HashMap<&str, (PthDtype, u64)> = HashMap::new();
    for s in head.main.heap.storages.iter() {
        roots.entry(s.key.as_str()).or_insert((s.dtype, s.numel));
    }
    let mut ranges: HashMap<String, (u64, u64)> = HashMap::new();
    let mut listed = HashSet::new();
    let mut offset = head.end;
    for key in &head.keys {
        let shown = key.escape_debug();
        if !listed.insert(key.as_str()) {
            return Err(bad(format!("storage `{shown}` is listed twice")));
        }
        let Some(&(dtype, numel)) = roots.get(key.as_str()) else {
            return Err(bad(format!(
                "storage `{shown}` is listed but the pickle never uses it"
            )));
        };
        let count = src.read_vec(offset, 8, "a storage's element count")?;
        let count = i64::from_le_bytes(count.try_into().unwrap_or([0xff; 8]));
        if u64::try_from(count).ok() != Some(numel) {
            return Err(bad(format!(
                "storage `{shown}` at byte {offset} holds {count} elements but the pickle \
                 declares {numel}"
            )));
        }
        let start = offset + 8;
        let end = numel
            .checked_mul(dtype.size() as u64)
            .and_then(|n| start.checked_add(n))
            .filter(|&end| end <= len)
            .ok_or_else(|| {
                bad(format!(
                    "storage `{shown}` ({numel} {} elements from byte {start}) runs past \
                     the end of the file",
                    dtype.name()
                ))
            })?;
        ranges.insert(key.clone(), (start, end));
        offset = end;
    }

    let mut storage_range = |s: &StorageRef| -> Result<(u64, u64), Fail> {
        let Some(&(start, end)) = ranges.get(&s.key) else {
            return Err(bad(format!(
                "storage `{}` has no data: it is missing from the storage key list",
                s.key.escape_debug()
            )));
        };
        let Some(v) = &s.view else {
            return Ok((start, end));
        };
        let el = s.dtype.size() as u64;
        let range = v
            .offset
            .checked_mul(el)
            .and_then(|o| start.checked_add(o))
            .and_then(|a| Some((a, a.checked_add(v.numel.checked_mul(el)?)?)))
            .filter(|&(_, b)| b <= end);
        range.ok_or_else(|| {
            bad(format!(
                "view `{}` ({} elements at offset {}) runs past its storage `{}`",
                v.key.escape_debug(),
                v.numel,
                v.offset,
                s.key.escape_debug()
            ))
        })
    };
    let pickle_len = usize::try_from(head.end).unwrap_or(usize::MAX);
    super::tensors(&head.main, &mut storage_range, pickle_len)
}

/// Parses the five pickles at the start of `buf`; `whole` says whether `buf` is the
/// entire file (otherwise running out of bytes asks for a longer prefix).
fn read_head(buf: &[u8], whole: bool) -> Result<Head, HeadError> {
    let load = |start: usize, form: PidForm, what: &str| {
        pickle::load(buf, start, form).map_err(|e| match e {
            pickle::PickleError::Truncated { .. } if !whole => HeadError::Short,
            e => HeadError::Fail(super::pickle_fail(what, 0, e, whole)),
        })
    };
    let fail = |msg: String| HeadError::Fail(bad(msg));

    let not_torch = || {
        fail("it is neither a zip archive nor a legacy torch.save file (no magic number)".into())
    };
    let magic = match pickle::load(buf, 0, PidForm::Forbidden) {
        Ok(magic) => magic,
        Err(pickle::PickleError::Truncated { .. }) if !whole => return Err(HeadError::Short),
        Err(_) => return Err(not_torch()),
    };
    let is_magic = match magic.root {
        Value::BigInt(id) => {
            let b = &magic.heap.blobs[id as usize];
            b.len() >= MAGIC.len()
                && b[..MAGIC.len()] == MAGIC
                && b[MAGIC.len()..].iter().all(|&x| x == 0)
        }
        _ => false,
    };
    if !is_magic {
        return Err(not_torch());
    }
    let version = load(magic.end, PidForm::Forbidden, "the protocol-version pickle")?;
    if version.root != Value::Int(PROTOCOL_VERSION) {
        return Err(fail(format!(
            "its legacy protocol version is {:?}, expected {PROTOCOL_VERSION}",
            version.root
        )));
    }
    let sys_info = load(version.end, PidForm::Forbidden, "the sys_info pickle")?;
    if let Value::Dict(id) = sys_info.root {
        let h = &sys_info.heap;
        let big = h.dicts[id as usize].iter().any(|&(k, v)| {
            matches!(k, Value::Str(s) if h.strs[s as usize] == "little_endian")
                && v == Value::Bool(false)
        });
        if big {
            return Err(fail(
                "it was saved on a big-endian machine, which is not supported".into(),
            ));
        }
    }
    let main = load(sys_info.end, PidForm::Legacy, "the state-dict pickle")?;
    let key_list = load(main.end, PidForm::Forbidden, "the storage-key-list pickle")?;
    let h = &key_list.heap;
    let (Value::List(id) | Value::Tuple(id)) = key_list.root else {
        return Err(fail(format!(
            "its storage key list is {}",
            key_list.root.kind()
        )));
    };
    let mut keys = Vec::new();
    for &k in h.seqs[id as usize].iter() {
        keys.push(match k {
            Value::Str(s) => h.strs[s as usize].clone(),
            Value::Bytes(b) => String::from_utf8_lossy(&h.blobs[b as usize]).into_owned(),
            Value::Int(i) => i.to_string(),
            other => {
                return Err(fail(format!("its storage key list holds {}", other.kind())));
            }
        });
    }
    Ok(Head {
        end: key_list.end as u64,
        main,
        keys,
    })
}
