//! The zip container `torch.save` writes since PyTorch 1.6, and the state dict in it.
//!
//! A minimal reader of the central directory (PKWARE APPNOTE 4.3.6 and 4.3.14–16): the
//! end record, the ZIP64 locator and end record that torch's writer
//! (`caffe2/serialize/inline_container.cc`, on miniz) emits, the central headers with
//! their ZIP64 extra fields, and each local header, which only says where an entry's bytes start. Offsets are
//! taken as absolute, as PyTorch's own reader does, so there is no guessing of prepended
//! data (the guess that made the `zip` crate misread some torch archives).
//!
//! The archive layout mirrors `_load` in `torch/serialization.py`: every record sits under
//! one folder named after the file at save time (`<stem>/data.pkl`, `<stem>/byteorder`,
//! `<stem>/data/<key>`); storages must be STORED (uncompressed), as torch writes them.

use std::collections::HashMap;

use super::pickle::{self, PidForm, StorageRef};
use super::{Fail, PthTensor, Source, bad};

/// Signature of the end of central directory record.
const EOCD_SIG: &[u8; 4] = b"PK\x05\x06";
/// Length of the end record without its comment.
const EOCD_LEN: u64 = 22;
/// Signature of the ZIP64 end of central directory locator.
const LOCATOR_SIG: &[u8; 4] = b"PK\x06\x07";
/// Length of the ZIP64 locator.
const LOCATOR_LEN: u64 = 20;
/// Signature of the ZIP64 end of central directory record.
const EOCD64_SIG: &[u8; 4] = b"PK\x06\x06";
/// Length of the ZIP64 end record without extensible data.
const EOCD64_LEN: u64 = 56;
/// Signature of a central directory header.
const CENTRAL_SIG: &[u8; 4] = b"PK\x01\x02";
/// Length of a central header without name, extra field and comment.
const CENTRAL_LEN: usize = 46;
/// Signature of a local file header.
const LOCAL_SIG: &[u8; 4] = b"PK\x03\x04";
/// Length of a local header without name and extra field.
const LOCAL_LEN: u64 = 30;
/// Largest `byteorder` record read.
const MAX_BYTEORDER: u64 = 16;

/// Little-endian integers at `b[i..]` (callers check the length).
fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

/// See [`u16_at`].
fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// See [`u16_at`].
fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(a)
}

/// One central-directory entry.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Name as stored (lossily decoded).
    pub name: String,
    /// General purpose flags.
    pub flags: u16,
    /// Compression method (0 = STORED).
    pub method: u16,
    /// Compressed size.
    pub compressed: u64,
    /// Uncompressed size.
    pub size: u64,
    /// Offset of the local header.
    pub local: u64,
}

/// The entries of an archive, by name.
#[derive(Debug)]
pub(crate) struct Archive {
    /// Entries in directory order.
    pub entries: Vec<Entry>,
    by_name: HashMap<String, usize>,
}

impl Archive {
    /// Reads the end records and the central directory.
    pub(crate) fn read(src: &mut dyn Source) -> Result<Self, Fail> {
        let len = src.len();
        if len < EOCD_LEN {
            return Err(bad(format!(
                "the file is {len} bytes long, too short for a zip archive"
            )));
        }
        // The end record is followed by a comment of at most 64 KiB.
        let tail_len = len.min(EOCD_LEN + 0xFFFF);
        let tail_start = len - tail_len;
        let tail = src.read_vec(tail_start, tail_len, "the zip end records")?;
        let Some(e) = (0..=tail.len() - EOCD_LEN as usize)
            .rev()
            .find(|&i| &tail[i..i + 4] == EOCD_SIG)
        else {
            return Err(bad(
                "it has no zip end-of-central-directory record (truncated download?)",
            ));
        };
        let eocd = tail_start + e as u64;
        let r = &tail[e..e + EOCD_LEN as usize];
        let (disk, cd_disk) = (u16_at(r, 4), u16_at(r, 6));
        let mut entries = u64::from(u16_at(r, 10));
        let mut cd_size = u64::from(u32_at(r, 12));
        let mut cd_offset = u64::from(u32_at(r, 16));

        let mut zip64 = false;
        if let Some(loc) = eocd.checked_sub(LOCATOR_LEN) {
            let l = src.read_vec(loc, LOCATOR_LEN, "the ZIP64 locator")?;
            if &l[..4] == LOCATOR_SIG {
                let at = u64_at(&l, 8);
                let end = at.checked_add(EOCD64_LEN).filter(|&end| end <= loc);
                if end.is_none() {
                    return Err(bad(format!(
                        "its ZIP64 locator points at byte {at}, outside the archive"
                    )));
                }
                let r = src.read_vec(at, EOCD64_LEN, "the ZIP64 end record")?;
                if &r[..4] != EOCD64_SIG {
                    return Err(bad(format!("there is no ZIP64 end record at byte {at}")));
                }
                if u32_at(&r, 16) != 0 || u32_at(&r, 20) != 0 {
                    return Err(bad("the zip archive spans several disks"));
                }
                entries = u64_at(&r, 32);
                cd_size = u64_at(&r, 40);
                cd_offset = u64_at(&r, 48);
                zip64 = true;
            }
        }
        if !zip64 && (disk != 0 || cd_disk != 0) {
            return Err(bad("the zip archive spans several disks"));
        }
        let cd_end = cd_offset.checked_add(cd_size).filter(|&end| end <= eocd);
        if cd_end.is_none() {
            return Err(bad(format!(
                "its central directory (bytes {cd_offset}+{cd_size}) does not lie before \
                 the end record at byte {eocd}"
            )));
        }
        if entries > cd_size / CENTRAL_LEN as u64 {
            return Err(bad(format!(
                "its end record declares {entries} entries, more than a {cd_size}-byte \
                 central directory can hold"
            )));
        }
        let cd = src.read_vec(cd_offset, cd_size, "the central directory")?;
        Self::parse_directory(&cd, entries as usize, cd_offset)
    }

    /// Parses `count` central headers from `cd`, which starts at byte `cd_offset`.
    fn parse_directory(cd: &[u8], count: usize, cd_offset: u64) -> Result<Self, Fail> {
        let mut entries = Vec::with_capacity(count);
        let mut by_name = HashMap::with_capacity(count);
        let mut p = 0usize;
        for index in 0..count {
            let at = cd_offset + p as u64;
            let short = || bad(format!("central header {index} at byte {at} is cut short"));
            let h = cd.get(p..p + CENTRAL_LEN).ok_or_else(short)?;
            if &h[..4] != CENTRAL_SIG {
                return Err(bad(format!(
                    "there is no central header {index} at byte {at}"
                )));
            }
            let (name_len, extra_len, comment_len) = (
                usize::from(u16_at(h, 28)),
                usize::from(u16_at(h, 30)),
                usize::from(u16_at(h, 32)),
            );
            let name_end = p + CENTRAL_LEN + name_len;
            let extra_end = name_end + extra_len;
            let next = extra_end + comment_len;
            if next > cd.len() {
                return Err(short());
            }
            let name = String::from_utf8_lossy(&cd[p + CENTRAL_LEN..name_end]).into_owned();
            let mut entry = Entry {
                flags: u16_at(h, 8),
                method: u16_at(h, 10),
                compressed: u32_at(h, 20).into(),
                size: u32_at(h, 24).into(),
                local: u32_at(h, 42).into(),
                name,
            };
            apply_zip64_extra(&mut entry, &cd[name_end..extra_end])?;
            if by_name.insert(entry.name.clone(), entries.len()).is_some() {
                return Err(bad(format!(
                    "the zip archive holds entry `{}` twice",
                    entry.name.escape_debug()
                )));
            }
            entries.push(entry);
            p = next;
        }
        Ok(Archive { entries, by_name })
    }

    /// The entry called `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Entry> {
        self.by_name.get(name).map(|&i| &self.entries[i])
    }

    /// The absolute byte range of an entry's data, checked against its local header.
    pub(crate) fn data_range(&self, src: &mut dyn Source, e: &Entry) -> Result<(u64, u64), Fail> {
        let name = e.name.escape_debug();
        if e.flags & 1 != 0 {
            return Err(bad(format!("entry `{name}` is encrypted")));
        }
        if e.method != 0 {
            return Err(bad(format!(
                "entry `{name}` is compressed (method {}); torch.save stores entries \
                 uncompressed",
                e.method
            )));
        }
        if e.compressed != e.size {
            return Err(bad(format!(
                "entry `{name}` is stored but its sizes differ ({} vs {})",
                e.compressed, e.size
            )));
        }
        let h = src.read_vec(e.local, LOCAL_LEN, "a local header")?;
        if &h[..4] != LOCAL_SIG {
            return Err(bad(format!(
                "entry `{name}` has no local header at byte {}",
                e.local
            )));
        }
        let name_len = u64::from(u16_at(&h, 26));
        let extra_len = u64::from(u16_at(&h, 28));
        let local_name = src.read_vec(e.local + LOCAL_LEN, name_len, "a local header")?;
        if local_name != e.name.as_bytes() {
            return Err(bad(format!(
                "the local header at byte {} names `{}`, not `{name}`",
                e.local,
                String::from_utf8_lossy(&local_name).escape_debug()
            )));
        }
        let start = e.local + LOCAL_LEN + name_len + extra_len;
        match start.checked_add(e.size) {
            Some(end) if end <= src.len() => Ok((start, end)),
            _ => Err(bad(format!(
                "entry `{name}` ({} bytes from byte {start}) runs past the end of the file",
                e.size
            ))),
        }
    }
}

/// Replaces the saturated 32-bit fields of `entry` by those of its ZIP64 extra field.
fn apply_zip64_extra(entry: &mut Entry, mut extra: &[u8]) -> Result<(), Fail> {
    while extra.len() >= 4 {
        let id = u16_at(extra, 0);
        let size = usize::from(u16_at(extra, 2));
        let Some(body) = extra.get(4..4 + size) else {
            return Err(bad(format!(
                "entry `{}` has a cut-short extra field",
                entry.name.escape_debug()
            )));
        };
        if id == 1 {
            let mut fields = body.chunks_exact(8).map(|c| u64_at(c, 0));
            let missing = || {
                bad(format!(
                    "entry `{}` lacks a ZIP64 size or offset",
                    entry.name.escape_debug()
                ))
            };
            if entry.size == u64::from(u32::MAX) {
                entry.size = fields.next().ok_or_else(missing)?;
            }
            if entry.compressed == u64::from(u32::MAX) {
                entry.compressed = fields.next().ok_or_else(missing)?;
            }
            if entry.local == u64::from(u32::MAX) {
                entry.local = fields.next().ok_or_else(missing)?;
            }
            return Ok(());
        }
        extra = &extra[4 + size..];
    }
    Ok(())
}

/// Every tensor of the state dict in the zip archive `src`.
pub(crate) fn index(src: &mut dyn Source) -> Result<Vec<PthTensor>, Fail> {
    let archive = Archive::read(src)?;
    // Like PyTorchStreamReader: the folder of the first entry is the archive's name.
    let Some(first) = archive.entries.first() else {
        return Err(bad("the zip archive is empty"));
    };
    let Some((prefix, _)) = first.name.split_once('/') else {
        return Err(bad(format!(
            "its first zip entry `{}` is not inside a folder, as torch.save writes it",
            first.name.escape_debug()
        )));
    };
    let prefix = prefix.to_owned();
    let record = |name: &str| format!("{prefix}/{name}");
    if archive.get(&record("constants.pkl")).is_some() {
        return Err(bad(
            "it is a TorchScript archive (torch.jit.save), not a state dict saved by \
             torch.save",
        ));
    }
    if let Some(e) = archive.get(&record("byteorder")) {
        let (start, end) = archive.data_range(src, e)?;
        if end - start > MAX_BYTEORDER {
            return Err(bad(format!(
                "entry `{}` is too long",
                e.name.escape_debug()
            )));
        }
        match &src.read_vec(start, end - start, "the byteorder record")?[..] {
            b"little" => {}
            b"big" => {
                return Err(bad(
                    "it was saved on a big-endian machine, which is not supported",
                ));
            }
            other => {
                return Err(bad(format!(
                    "its byteorder record says `{}`",
                    String::from_utf8_lossy(other).escape_debug()
                )));
            }
        }
    }
    let pkl_name = record("data.pkl");
    let Some(pkl) = archive.get(&pkl_name) else {
        return Err(bad(format!(
            "the zip archive has no `{}` entry",
            pkl_name.escape_debug()
        )));
    };
    let (start, end) = archive.data_range(src, pkl)?;
    let data = src.read_vec(start, end - start, "the pickle")?;
    let loaded = pickle::load(&data, 0, PidForm::Zip).map_err(|e| {
        let what = format!("the pickle `{}`", pkl_name.escape_debug());
        super::pickle_fail(&what, start, e, true)
    })?;

    let mut ranges: HashMap<String, (u64, u64)> = HashMap::new();
    let mut storage_range = |s: &StorageRef| -> Result<(u64, u64), Fail> {
        let (start, end) = match ranges.get(&s.key) {
            Some(&r) => r,
            None => {
                let name = record(&format!("data/{}", s.key));
                let Some(e) = archive.get(&name) else {
                    return Err(bad(format!(
                        "storage `{}` has no entry `{}`",
                        s.key.escape_debug(),
                        name.escape_debug()
                    )));
                };
                let r = archive.data_range(src, e)?;
                ranges.insert(s.key.clone(), r);
                r
            }
        };
        let nbytes = s.numel.checked_mul(s.dtype.size() as u64);
        match nbytes {
            Some(n) if n <= end - start => Ok((start, start + n)),
            _ => Err(bad(format!(
                "storage `{}` declares {} {} elements but its entry holds {} bytes",
                s.key.escape_debug(),
                s.numel,
                s.dtype.name(),
                end - start
            ))),
        }
    };
    super::tensors(&loaded, &mut storage_range, data.len())
}
