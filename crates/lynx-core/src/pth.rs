//! PyTorch `.pth` archives (what facexlib ships), read through burn-store's
//! `pytorch-reader`.
//!
//! # The `zip` 9.4 work-around
//!
//! `torch.save` writes a ZIP whose end records are: central directory, ZIP64 end record
//! (56 bytes), ZIP64 locator (20 bytes), then a classic end record whose fields are all
//! valid (not the `0xFFFF…` placeholders that announce ZIP64). The `zip` crate (9.4.1, used
//! by `pytorch-reader`) then takes its ZIP32 path and, looking for prepended data, first
//! tries the central directory start implied by *end record position − directory size*.
//! That guess ignores the 76 bytes of ZIP64 records in between, so it lands 76 bytes into
//! the directory. If a central header happens to start exactly there, the guess is
//! accepted, the archive offset becomes 76, and reading runs off the directory into the
//! ZIP64 end record: `Invalid Central Directory header`. The first central header of a
//! torch archive is `46 + len("<stem>/data.pkl")` bytes, so every checkpoint whose archive
//! name (the file stem at save time) has 21 characters trips it, e.g.
//! `retinaface_mobile0.25.pth`.
//!
//! [`open`] recognises exactly that layout from the file's tail. For such a file it writes
//! a temporary copy without the (redundant, since no field overflows) ZIP64 end records,
//! opens the copy, and unlinks it at once on Unix (the reader keeps its own handle, so the
//! tensors stay readable). Every other file is opened in place.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{Error, Result};

/// Every tensor of the state dict in `path`, by dotted name.
pub(crate) fn open(path: &Path) -> Result<Vec<(String, pytorch_reader::Tensor)>> {
    match misread_zip64_layout(path)? {
        None => read(path, path),
        Some(layout) => open_repaired(path, &layout),
    }
}

fn read(path: &Path, shown: &Path) -> Result<Vec<(String, pytorch_reader::Tensor)>> {
    let reader =
        pytorch_reader::PytorchReader::new(path).map_err(|e| Error::format(shown, "PyTorch", e))?;
    Ok(reader.into_tensors().into_iter().collect())
}

const EOCD_SIG: [u8; 4] = *b"PK\x05\x06";
const LOCATOR_SIG: [u8; 4] = *b"PK\x06\x07";
const EOCD64_SIG: [u8; 4] = *b"PK\x06\x06";
const CDFH_SIG: [u8; 4] = *b"PK\x01\x02";
const EOCD_LEN: u64 = 22;
const LOCATOR_LEN: u64 = 20;

/// Where the parts of an archive that `zip` 9.4 misreads lie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Zip64Layout {
    /// End of the central directory: everything before it is kept.
    pub cd_end: u64,
    /// Offset of the classic end record, which with its comment ends the file.
    pub eocd: u64,
}

/// Recognises the layout described in the module docs: a classic end record with no
/// overflowing field, ZIP64 end records between it and the central directory, and a
/// central header signature exactly `directory size` bytes before the end record, where
/// `zip` 9.4 looks first. `None` for anything else (including non-ZIP files, which
/// `pytorch-reader` then reports on).
pub(crate) fn misread_zip64_layout(path: &Path) -> Result<Option<Zip64Layout>> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    // The end record, a comment of up to 64 KiB, and the ZIP64 records before it.
    let tail_len = len.min(EOCD_LEN + 0xFFFF + 56 + LOCATOR_LEN);
    let tail_start = len - tail_len;
    let mut tail = vec![0u8; tail_len as usize];
    file.seek(SeekFrom::Start(tail_start))
        .and_then(|_| file.read_exact(&mut tail))
        .map_err(|e| Error::io(path, e))?;
    let u16_at = |b: &[u8], i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
    let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());

    // The last end record whose comment ends the file exactly.
    let Some(e) = (0..tail.len().saturating_sub(EOCD_LEN as usize - 1))
        .rev()
        .find(|&i| {
            tail[i..i + 4] == EOCD_SIG
                && i + EOCD_LEN as usize + u16_at(&tail, i + 20) as usize == tail.len()
        })
    else {
        return Ok(None);
    };
    let entries = u16_at(&tail, e + 10);
    let cd_size = u64::from(u32_at(&tail, e + 12));
    let cd_offset = u64::from(u32_at(&tail, e + 16));
    if entries == u16::MAX || cd_size == u64::from(u32::MAX) || cd_offset == u64::from(u32::MAX) {
        return Ok(None); // `zip` takes its ZIP64 path, which reads the records correctly.
    }
    let eocd = tail_start + e as u64;
    // The ZIP64 locator right before the end record, pointing at the ZIP64 end record,
    // which directly follows the central directory.
    let Some(l) = e.checked_sub(LOCATOR_LEN as usize) else {
        return Ok(None);
    };
    if tail[l..l + 4] != LOCATOR_SIG {
        return Ok(None);
    }
    let cd_end = cd_offset + cd_size;
    let eocd64 = u64_at(&tail, l + 8);
    if eocd64 != cd_end || eocd64 >= tail_start + l as u64 || cd_end > eocd {
        return Ok(None);
    }
    let mut sig = [0u8; 4];
    let read_sig = |file: &mut File, at: u64, sig: &mut [u8; 4]| {
        file.seek(SeekFrom::Start(at))
            .and_then(|_| file.read_exact(sig))
            .map_err(|e| Error::io(path, e))
    };
    read_sig(&mut file, eocd64, &mut sig)?;
    if sig != EOCD64_SIG {
        return Ok(None);
    }
    // Where `zip` 9.4 looks first; a central header there is what misleads it.
    let guess = eocd - cd_size;
    if guess == cd_offset || guess + 4 > eocd {
        return Ok(None);
    }
    read_sig(&mut file, guess, &mut sig)?;
    if sig != CDFH_SIG {
        return Ok(None);
    }
    Ok(Some(Zip64Layout { cd_end, eocd }))
}

/// Opens a copy of `path` without its ZIP64 end records (see the module docs).
fn open_repaired(
    path: &Path,
    layout: &Zip64Layout,
) -> Result<Vec<(String, pytorch_reader::Tensor)>> {
    let copy = TempCopy::create(path)?;
    let write = |copy: &TempCopy| -> std::io::Result<()> {
        let mut src = File::open(path)?;
        let mut dst = std::fs::OpenOptions::new().write(true).open(&copy.0)?;
        // File-to-file copies go through `copy_file_range` where the OS has it.
        let copied = std::io::copy(&mut (&mut src).take(layout.cd_end), &mut dst)?;
        if copied != layout.cd_end {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        src.seek(SeekFrom::Start(layout.eocd))?;
        std::io::copy(&mut src, &mut dst)?;
        dst.flush()
    };
    write(&copy).map_err(|e| {
        Error::io(
            &copy.0,
            std::io::Error::new(
                e.kind(),
                format!(
                    "while writing a repaired copy of {} (zip 9.4 misreads its ZIP64 records): {e}",
                    path.display()
                ),
            ),
        )
    })?;
    let tensors = read(&copy.0, path)?;
    // Unix: unlinking leaves the reader's open handles valid. Elsewhere the copy is
    // removed when this guard drops if the OS allows it, and left (with a warning) if not.
    drop(copy);
    Ok(tensors)
}

/// A temporary file, removed on drop.
struct TempCopy(PathBuf);

impl TempCopy {
    fn create(original: &Path) -> Result<Self> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir();
        let stem = original
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("checkpoint");
        let path = dir.join(format!(
            "lynx-pth-{}-{}-{stem}.pth",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(TempCopy(path))
    }
}

impl Drop for TempCopy {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            log::warn!("could not remove temporary file {}: {e}", self.0.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        crate::testing::fixtures_dir().join("components").join(name)
    }

    #[test]
    fn recognises_the_misread_layout_only() {
        let retina = misread_zip64_layout(&fixture("retinaface_mobile0.25.pth")).unwrap();
        let layout = retina.expect("retinaface_mobile0.25.pth has the misread layout");
        // 76 bytes of ZIP64 records between the directory and the end record.
        assert_eq!(layout.eocd - layout.cd_end, 76);
        // Same ZIP64 records, but a 68-byte first header: opened in place.
        assert_eq!(
            misread_zip64_layout(&fixture("arcface_ir_se.pth")).unwrap(),
            None
        );
        // Not a ZIP at all.
        assert_eq!(
            misread_zip64_layout(&fixture("arcface.json")).unwrap(),
            None
        );
    }
}
