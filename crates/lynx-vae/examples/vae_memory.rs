//! Measures the peak memory (and time) of decoding with the full-size Wan2.1 VAE
//! architecture, on random weights, on the CPU backend (`flex`).
//!
//! ```text
//! cargo run -p lynx-vae --example vae_memory -- decode 480 832 [latent_frames] [tile]
//! cargo run -p lynx-vae --example vae_memory -- encode 256 256 [frames]
//! ```
//!
//! Run one measurement per process: the peak (`VmHWM` of `/proc/self/status`) is the
//! process's. Weights are written once to `$TMPDIR/lynx-vae-wan21-random/`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::{DType, Device, Distribution, Tensor};
use lynx_core::Error;
use lynx_store::Checkpoint;
use lynx_vae::{Tiling, VaeConfig, WanVae};

fn status_kib(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn write_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>)],
    mut fill: impl FnMut(&str, &[usize]) -> Vec<f32>,
) {
    let mut header = String::from("{");
    let mut offset = 0usize;
    for (i, (key, shape)) in tensors.iter().enumerate() {
        let n: usize = shape.iter().product();
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        if i > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            "\"{key}\":{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{offset},{}]}}",
            dims.join(","),
            offset + 4 * n
        ));
        offset += 4 * n;
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    file.write_all(&(header.len() as u64).to_le_bytes())
        .unwrap();
    file.write_all(header.as_bytes()).unwrap();
    for (key, shape) in tensors {
        for v in fill(key, shape) {
            file.write_all(&v.to_le_bytes()).unwrap();
        }
    }
}

/// Finds the architecture's keys and shapes from the loader's own report: first every
/// key is missing, then every key has the wrong shape and the report gives the right one.
fn random_checkpoint(cfg: &VaeConfig, dir: &Path, device: &Device) -> PathBuf {
    let path = dir.join("diffusion_pytorch_model.safetensors");
    if path.is_file() {
        return path;
    }
    std::fs::create_dir_all(dir).unwrap();
    let probe = dir.join("probe.safetensors");
    write_safetensors(&probe, &[], |_, _| Vec::new());
    let keys = match Checkpoint::open(&probe)
        .unwrap()
        .build(device, DType::F32, |w| WanVae::load(w, cfg.clone()))
    {
        Err(Error::Keys { missing, .. }) => missing,
        other => panic!("unexpected probe result {other:?}"),
    };
    let ones: Vec<_> = keys.iter().map(|k| (k.clone(), vec![1])).collect();
    write_safetensors(&probe, &ones, |_, _| vec![1.0]);
    let shapes = match Checkpoint::open(&probe)
        .unwrap()
        .build(device, DType::F32, |w| WanVae::load(w, cfg.clone()))
    {
        Err(Error::Keys { mismatched, .. }) => mismatched,
        other => panic!("unexpected probe result {other:?}"),
    };
    std::fs::remove_file(&probe).unwrap();
    let tensors: Vec<_> = shapes
        .into_iter()
        .map(|(k, expected, _)| (k, expected))
        .collect();
    let mut state = 0x853c49e6748fea9bu64;
    write_safetensors(&path, &tensors, |key, shape| {
        let n: usize = shape.iter().product();
        if key.ends_with("gamma") {
            return vec![1.0; n];
        }
        let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
        let bound = (1.0 / fan_in as f32).sqrt();
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * bound
            })
            .collect()
    });
    path
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("decode");
    let arg =
        |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (h, w) = (arg(1, 480), arg(2, 832));
    let device = Device::flex();
    let cfg = VaeConfig::default();
    let dir = std::env::temp_dir().join("lynx-vae-wan21-random");
    let weights = random_checkpoint(&cfg, &dir, &device);
    let ckpt = Checkpoint::open(&weights).unwrap();
    let mut vae = ckpt
        .build(&device, DType::F32, |w| WanVae::load(w, cfg))
        .unwrap();
    drop(ckpt);
    let normal = Distribution::Normal(0.0, 1.0);
    // Reset the peak to the current size, so that loading does not count.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let start_rss = status_kib("VmRSS:");
    let t = Instant::now();
    let frames_out = match mode {
        "encode" => {
            let frames = arg(3, 1);
            let video = Tensor::<5>::random([1, 3, frames, h, w], normal, &device).clamp(-1.0, 1.0);
            let z = vae.encode(video).unwrap();
            let _ = z.mean.into_data();
            frames
        }
        _ => {
            let lat_frames = arg(3, 3);
            let tile = arg(4, 0);
            let latents = Tensor::<5>::random([1, 16, lat_frames, h / 8, w / 8], normal, &device);
            if tile > 0 {
                let stride = tile * 3 / 4 / 8 * 8;
                vae.set_tiling(Some(Tiling { tile, stride })).unwrap();
                let _ = vae.decode(latents).unwrap().into_data();
            } else {
                vae.decode_frames(latents, |chunk| {
                    let _ = chunk.into_data();
                    Ok(())
                })
                .unwrap();
            }
            1 + 4 * (lat_frames - 1)
        }
    };
    let secs = t.elapsed().as_secs_f64();
    let peak = status_kib("VmHWM:");
    println!(
        "{mode} {h}x{w}, {frames_out} frames: {:.2} s, RSS before {:.2} GiB, peak {:.2} GiB, peak − before {:.2} GiB",
        secs,
        start_rss as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        (peak.saturating_sub(start_rss)) as f64 / 1048576.0
    );
}
