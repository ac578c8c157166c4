//! Fuzzing of the readers of the weight files users hold (see `lynx_testing::fuzz`): the
//! GGUF reader, ComfyUI's scaled fp8 safetensors and the native Wan key layouts; every
//! case is opened with `Checkpoint::open` and every tensor read, decoded and kept
//! encoded, as a model load does. Beside them, hand-made hostile GGUF headers: dims whose
//! product overflows, offsets past the end, unknown types, a tensor count of 2⁶³.

use std::path::{Path, PathBuf};

use burn::tensor::DType;
use lynx_store::Checkpoint;
use lynx_testing::fixtures_dir;
use lynx_testing::fuzz::{CountingAlloc, Format, FuzzFile, Target};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Opens the checkpoint at `path` and reads every tensor decoded to f32 and, where it
/// is encoded, kept encoded.
fn read_all(path: &Path) -> lynx_core::Result<()> {
    let ckpt = Checkpoint::open(path)?;
    let keys: Vec<String> = ckpt.keys().map(str::to_string).collect();
    for key in keys {
        match ckpt.read_as(&key, DType::F32) {
            Ok(_) => {}
            // Integer tensors are not float: their own read.
            Err(_) if ckpt.encoding(&key).is_none() => drop(ckpt.read(&key)?),
            Err(e) => return Err(e),
        }
        if let Some(q) = ckpt.quantized(&key)? {
            let rows = q.rows().min(2);
            let mut out = vec![0f32; rows * q.width()];
            q.dequantize_rows(0..rows, &mut out);
        }
    }
    Ok(())
}

fn formats(name: &str) -> PathBuf {
    fixtures_dir().join("formats").join(name)
}

#[test]
fn fuzz_gguf() {
    let mut target = Target::new("gguf").cases(1500).alloc_bound(8, 1 << 20);
    for name in [
        "ktensors_other.gguf",
        "ktensors_Q6_K.gguf",
        "ktensors_Q8_0.gguf",
        "wan_Q8_0.gguf",
    ] {
        let bytes = std::fs::read(formats(name)).unwrap();
        // The header (metadata and tensor infos) is where the parser is.
        let header = bytes
            .len()
            .min(if name.starts_with("wan") { 8192 } else { 1024 });
        let file = FuzzFile::new("x.gguf", bytes, Format::Binary).hot(0..header);
        target = target.seed(vec![file]);
    }
    target.run(|dir| read_all(&dir.join("x.gguf")));
}

#[test]
fn fuzz_scaled_fp8_safetensors() {
    let file = FuzzFile::read(formats("umt5_fp8_scaled.safetensors"), Format::Safetensors)
        .named("x.safetensors");
    Target::new("scaled_fp8")
        .cases(800)
        .seed(vec![file])
        .run(|dir| read_all(&dir.join("x.safetensors")));
}

#[test]
fn fuzz_native_layouts() {
    let mut target = Target::new("native_layouts").cases(800);
    for name in [
        "vae_native.safetensors",
        "wan_native_fp8_e4m3fn.safetensors",
        "wan_native_bf16.safetensors",
    ] {
        let file = FuzzFile::read(formats(name), Format::Safetensors).named("x.safetensors");
        target = target.seed(vec![file]);
    }
    target.run(|dir| read_all(&dir.join("x.safetensors")));
}

/// A GGUF v3 file: one u32 metadata entry and the tensors `(name, ne, type, offset)`,
/// followed by `data` at the 32-byte aligned data start.
fn gguf(count: Option<u64>, tensors: &[(&str, &[u64], u32, u64)], data: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(b"GGUF");
    b.extend(3u32.to_le_bytes());
    b.extend(count.unwrap_or(tensors.len() as u64).to_le_bytes());
    b.extend(1u64.to_le_bytes());
    let key = b"general.quantization_version";
    b.extend((key.len() as u64).to_le_bytes());
    b.extend(key);
    b.extend(4u32.to_le_bytes());
    b.extend(2u32.to_le_bytes());
    for (name, ne, t, offset) in tensors {
        b.extend((name.len() as u64).to_le_bytes());
        b.extend(name.as_bytes());
        b.extend((ne.len() as u32).to_le_bytes());
        for d in *ne {
            b.extend(d.to_le_bytes());
        }
        b.extend(t.to_le_bytes());
        b.extend(offset.to_le_bytes());
    }
    while !b.len().is_multiple_of(32) {
        b.push(0);
    }
    b.extend(data);
    b
}

fn open_bytes(name: &str, bytes: &[u8]) -> lynx_core::Result<Checkpoint> {
    let dir = std::env::temp_dir().join(format!("lynx-gguf-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let out = Checkpoint::open(&path);
    if let Ok(c) = &out {
        let keys: Vec<String> = c.keys().map(str::to_string).collect();
        for k in keys {
            c.read_as(&k, DType::F32)?;
        }
    }
    out
}

fn err(name: &str, bytes: &[u8]) -> String {
    open_bytes(name, bytes).unwrap_err().to_string()
}

#[test]
fn hostile_gguf_headers_are_errors() {
    // A valid file first: the builder is right, so each case below fails for its reason.
    let q8 = [0u8; 34];
    let ok = gguf(None, &[("w", &[32, 1], 8, 0)], &q8);
    assert!(open_bytes("ok.gguf", &ok).unwrap().contains("w"));

    let msg = err(
        "overflow.gguf",
        &gguf(None, &[("w", &[1 << 32, 1 << 32, 1 << 32], 0, 0)], &q8),
    );
    assert!(msg.contains("`w`") && msg.contains("overflow"), "{msg}");

    let msg = err("past_end.gguf", &gguf(None, &[("w", &[32, 1], 8, 64)], &q8));
    assert!(msg.contains("`w`") && msg.contains("past the end"), "{msg}");

    let msg = err("unknown.gguf", &gguf(None, &[("w", &[32, 1], 9, 0)], &q8));
    assert!(msg.contains("`w`") && msg.contains("Q8_1"), "{msg}");
    let msg = err(
        "unknown2.gguf",
        &gguf(None, &[("w", &[32, 1], 4242, 0)], &q8),
    );
    assert!(msg.contains("`w`") && msg.contains("4242"), "{msg}");

    let msg = err(
        "count.gguf",
        &gguf(Some(1 << 63), &[("w", &[32, 1], 8, 0)], &q8),
    );
    assert!(msg.contains("tensor count"), "{msg}");

    let msg = err("rows.gguf", &gguf(None, &[("w", &[16, 2], 8, 0)], &q8));
    assert!(msg.contains("`w`") && msg.contains("blocks"), "{msg}");

    let msg = err("unaligned.gguf", &gguf(None, &[("w", &[32, 1], 8, 3)], &q8));
    assert!(msg.contains("`w`") && msg.contains("offset"), "{msg}");

    let msg = err("truncated.gguf", &ok[..ok.len() - 40]);
    assert!(msg.contains("GGUF"), "{msg}");
}
