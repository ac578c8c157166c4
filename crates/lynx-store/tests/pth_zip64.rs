//! A `.pth` larger than 4 GiB, as the released `models_t5_umt5-xxl-enc-bf16.pth`
//! (11 GB) is: the tiny bf16 T5 of `tests/fixtures/wan_original/t5_bf16.pth` rewritten
//! with its storages past byte 4.5 GiB (a sparse file: the gap takes no disk), so that
//! local header offsets and the central directory's offset only fit in ZIP64 fields.
//! Indexed from the central directory and read through the memory map, touching only
//! the pages of the tensors read.
//!
//! Linux only: there the file systems CI uses (ext4, tmpfs, overlayfs) leave the gap as a
//! hole, where another could write 4.5 GiB of zeros.
#![cfg(target_os = "linux")]

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;

use lynx_store::Checkpoint;

fn u16_at(b: &[u8], i: usize) -> usize {
    u16::from_le_bytes([b[i], b[i + 1]]) as usize
}
fn u32_at(b: &[u8], i: usize) -> u64 {
    u32::from_le_bytes(b[i..i + 4].try_into().unwrap()) as u64
}
fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i..i + 8].try_into().unwrap())
}

/// Rewrites the zip archive `src` with a gap before its first storage entry that puts
/// it, and everything after it, past `gap_to` bytes.
fn relocate(src: &[u8], out: &mut File, gap_to: u64) {
    // torch.save always ends with ZIP64 end records.
    let e64 = src.windows(4).rposition(|w| w == b"PK\x06\x06").unwrap();
    let (count, cd_offset) = (u64_at(src, e64 + 32), u64_at(src, e64 + 48) as usize);
    let mut central = Vec::new();
    let mut p = cd_offset;
    let mut pos = 0u64;
    let mut moved = false;
    for _ in 0..count {
        let h = &src[p..];
        assert_eq!(&h[..4], b"PK\x01\x02");
        let (n, x, c) = (u16_at(h, 28), u16_at(h, 30), u16_at(h, 32));
        let name = std::str::from_utf8(&h[46..46 + n]).unwrap();
        let (size, local) = (u32_at(h, 24), u32_at(h, 42) as usize);
        assert!(x == 0 && size < u32::MAX as u64 && local < u32::MAX as usize);
        let l = &src[local..];
        let blob = 30 + u16_at(l, 26) + u16_at(l, 28) + size as usize;
        if !moved && name.contains("/data/") {
            // Keep the 64-byte alignment torch gives the data.
            pos = gap_to + (local as u64 % 64);
            out.seek(SeekFrom::Start(pos)).unwrap();
            moved = true;
        }
        out.write_all(&src[local..local + blob]).unwrap();
        let mut header = h[..46 + n].to_vec();
        if pos >= u32::MAX as u64 {
            header[42..46].copy_from_slice(&u32::MAX.to_le_bytes());
            header[30..32].copy_from_slice(&12u16.to_le_bytes());
            header.extend_from_slice(&[1, 0, 8, 0]);
            header.extend_from_slice(&pos.to_le_bytes());
        } else {
            header[42..46].copy_from_slice(&(pos as u32).to_le_bytes());
        }
        central.extend_from_slice(&header);
        pos += blob as u64;
        p += 46 + n + x + c;
    }
    assert!(moved);
    let (cd_at, cd_len) = (pos, central.len() as u64);
    out.write_all(&central).unwrap();
    let mut end = Vec::new();
    end.extend_from_slice(b"PK\x06\x06");
    end.extend_from_slice(&44u64.to_le_bytes());
    end.extend_from_slice(&[45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    for v in [count, count, cd_len, cd_at] {
        end.extend_from_slice(&v.to_le_bytes());
    }
    end.extend_from_slice(b"PK\x06\x07\0\0\0\0");
    end.extend_from_slice(&(cd_at + cd_len).to_le_bytes());
    end.extend_from_slice(&1u32.to_le_bytes());
    end.extend_from_slice(b"PK\x05\x06\0\0\0\0");
    let n16 = (count.min(0xFFFF) as u16).to_le_bytes();
    end.extend_from_slice(&[n16[0], n16[1], n16[0], n16[1]]);
    end.extend_from_slice(&(cd_len as u32).to_le_bytes());
    end.extend_from_slice(&u32::MAX.to_le_bytes());
    end.extend_from_slice(&[0, 0]);
    out.write_all(&end).unwrap();
}

#[test]
fn a_pth_past_4_gib_reads_through_zip64_fields() {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/wan_original/t5_bf16.pth");
    let src = std::fs::read(&fixture).unwrap();
    let path = std::env::temp_dir().join(format!("lynx-zip64-{}.pth", std::process::id()));
    let gap_to = 4u64 << 30 | 1 << 29;
    {
        let mut out = File::create(&path).unwrap();
        relocate(&src, &mut out, gap_to);
    }
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len > gap_to);
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let on_disk = std::fs::metadata(&path).unwrap().blocks() * 512;
        assert!(
            on_disk < 64 << 20,
            "the gap should be a hole: {on_disk} bytes on disk"
        );
    }
    let index = lynx_store::pth::open(&path).unwrap();
    assert!(index.iter().all(|t| t.start > gap_to), "{:?}", index[0]);
    let big = Checkpoint::open(&path).unwrap();
    let small = Checkpoint::open(&fixture).unwrap();
    assert_eq!(big.keys().count(), small.keys().count());
    for key in small.keys() {
        assert_eq!(
            big.read_f32(key).unwrap(),
            small.read_f32(key).unwrap(),
            "{key}"
        );
    }
    std::fs::remove_file(&path).unwrap();
}
