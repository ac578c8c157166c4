//! `Preset::Tiny` against the tiny fixture model: the same files, the same safetensors
//! headers byte for byte (so the same keys, shapes, dtypes, order and metadata), the same
//! JSON files byte for byte; and the real presets' planned shards against the sizes the
//! Hub lists for `Wan-AI/Wan2.1-T2V-{14B,1.3B}-Diffusers`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lynx_synth::{Preset, SynthOptions, WeightDtype, plan, write_synthetic};

/// The bundled fixtures.
fn fixtures() -> PathBuf {
    lynx_testing::fixtures_dir()
}

/// The bundled lynx_lite fixture.
fn lite_fixture() -> Option<PathBuf> {
    Some(fixtures().join("lynx_lite")).filter(|p| p.is_dir())
}

fn tmp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lynx-synth-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The 8-byte length and the JSON header of a safetensors file.
fn header(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes[..8 + n].to_vec()
}

/// `key -> (dtype, shape)` through the official crate, for a readable diff.
fn tensors(path: &Path) -> BTreeMap<String, (String, Vec<usize>)> {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    meta.tensors()
        .into_iter()
        .map(|(k, info)| (k, (format!("{:?}", info.dtype), info.shape.clone())))
        .collect()
}

/// Every file of `ours` equals the fixture's: same names; safetensors headers and JSON
/// files byte for byte.
fn assert_same_folder(ours: &Path, fixture: &Path) {
    assert_eq!(files(ours), files(fixture), "files of {}", ours.display());
    for name in files(fixture) {
        let (a, b) = (ours.join(&name), fixture.join(&name));
        if name.ends_with(".safetensors") {
            assert_eq!(tensors(&a), tensors(&b), "tensors of {}", a.display());
            assert_eq!(header(&a), header(&b), "header of {}", a.display());
            assert_eq!(
                std::fs::metadata(&a).unwrap().len(),
                std::fs::metadata(&b).unwrap().len(),
                "size of {}",
                a.display()
            );
        } else if name.ends_with(".json") {
            let (ta, tb) = (std::fs::read_to_string(&a), std::fs::read_to_string(&b));
            assert_eq!(ta.unwrap(), tb.unwrap(), "{}", a.display());
        }
    }
}

#[test]
fn tiny_matches_the_fixture_exactly() {
    let fx = fixtures();
    let out = tmp_dir("tiny");
    let wan_fx = fx.join("Wan2.1-T2V-tiny-Diffusers");
    let opts = SynthOptions {
        tokenizer_dir: Some(wan_fx.join("tokenizer")),
        ..SynthOptions::default()
    };
    let mut calls = 0;
    let report =
        write_synthetic(Preset::Tiny, WeightDtype::F32, &out, &opts, |_| calls += 1).unwrap();
    assert!(calls >= report.files.len());
    let wan = out.join("Wan2.1-T2V-tiny-Diffusers");
    for sub in ["transformer", "text_encoder", "vae", "scheduler"] {
        assert_same_folder(&wan.join(sub), &wan_fx.join(sub));
    }
    let index = |dir: &Path| std::fs::read_to_string(dir.join("model_index.json")).unwrap();
    assert_eq!(index(&wan), index(&wan_fx));
    assert_same_folder(&out.join("lynx_full"), &fx.join("lynx_full"));
    // The tokenizer is copied, plus a README saying it is not the real one.
    let tok = wan.join("tokenizer");
    let mut expected = files(&wan_fx.join("tokenizer"));
    expected.push("README.txt".into());
    expected.sort();
    assert_eq!(files(&tok), expected);
    for name in files(&wan_fx.join("tokenizer")) {
        let read = |d: &Path| std::fs::read(d.join(&name)).unwrap();
        assert_eq!(read(&tok), read(&wan_fx.join("tokenizer")), "{name}");
    }
    if let Some(lite) = lite_fixture() {
        assert_same_folder(&out.join("lynx_lite"), &lite);
    }
    // The report adds up.
    let on_disk: u64 = report
        .files
        .iter()
        .map(|f| f.path.metadata().unwrap().len())
        .sum();
    assert_eq!(on_disk, report.total_bytes);
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn values_are_sane_and_deterministic() {
    let out = tmp_dir("values");
    let opts = SynthOptions::default();
    write_synthetic(Preset::Tiny, WeightDtype::BF16, &out, &opts, |_| {}).unwrap();
    let dir = out.join("Wan2.1-T2V-tiny-Diffusers/transformer");
    let index = std::fs::read_to_string(dir.join("diffusion_pytorch_model.safetensors.index.json"));
    let index: serde_json::Value = serde_json::from_str(&index.unwrap()).unwrap();
    let values = |name: &str| -> Vec<f32> {
        let shard = index["weight_map"][name].as_str().unwrap();
        let bytes = std::fs::read(dir.join(shard)).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let v = st.tensor(name).unwrap();
        assert_eq!(v.dtype(), safetensors::Dtype::BF16);
        v.data()
            .chunks_exact(2)
            .map(|c| burn::tensor::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect()
    };
    assert!(
        values("blocks.0.attn2.norm_q.weight")
            .iter()
            .all(|&x| x == 1.0)
    );
    assert!(values("blocks.0.attn1.to_q.bias").iter().all(|&x| x == 0.0));
    let w = values("blocks.0.attn1.to_q.weight");
    let mean = w.iter().sum::<f32>() / w.len() as f32;
    let std = (w.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / w.len() as f32).sqrt();
    assert!(
        mean.abs() < 0.002 && (std - 0.02).abs() < 0.002,
        "{mean} {std}"
    );
    assert!(w.iter().all(|x| x.is_finite() && x.abs() < 0.05));
    // The same seed gives the same bytes.
    let again = tmp_dir("values-again");
    write_synthetic(Preset::Tiny, WeightDtype::BF16, &again, &opts, |_| {}).unwrap();
    let rel = "Wan2.1-T2V-tiny-Diffusers/vae/diffusion_pytorch_model.safetensors";
    let read = |d: &Path| std::fs::read(d.join(rel)).unwrap();
    assert_eq!(read(&out), read(&again));
    std::fs::remove_dir_all(out).unwrap();
    std::fs::remove_dir_all(again).unwrap();
}

/// Shard sizes as the Hub lists them: GB (10^9 B) to 2 decimals without trailing zeros,
/// or whole MB below 1 GB.
fn shard_gb(preset: Preset, dtype: WeightDtype, dir: &str) -> Vec<String> {
    let p = plan(&preset.model_set(), dtype, &SynthOptions::default()).unwrap();
    p.files
        .iter()
        .filter(|f| {
            f.path.parent().unwrap().ends_with(dir)
                && f.path.extension().is_some_and(|e| e == "safetensors")
        })
        .map(|f| {
            let gb = f.bytes as f64 / 1e9;
            if gb >= 1.0 {
                let s = format!("{gb:.2}");
                s.trim_end_matches('0').trim_end_matches('.').to_string()
            } else {
                format!("{:.0}MB", gb * 1000.0)
            }
        })
        .collect()
}

#[test]
fn real_presets_shard_like_the_release() {
    use WeightDtype::{BF16, F32};
    // Wan-AI/Wan2.1-T2V-14B-Diffusers (all F32): 12 transformer shards, 4.86 GB then
    // 4.92 GB; text_encoder 4.97/4.9/4.97/5/2.89 GB; vae 508 MB.
    let tr = shard_gb(Preset::Wan14B, F32, "transformer");
    assert_eq!(tr.len(), 12);
    assert_eq!(tr[0], "4.86");
    assert!(tr[1..11].iter().all(|s| s == "4.92"), "{tr:?}");
    let te = shard_gb(Preset::Wan14B, F32, "text_encoder");
    assert_eq!(te, ["4.97", "4.9", "4.97", "5", "2.89"]);
    assert_eq!(shard_gb(Preset::Wan14B, F32, "vae"), ["508MB"]);
    // Wan-AI/Wan2.1-T2V-1.3B-Diffusers: transformer 5 GB + 677 MB.
    assert_eq!(
        shard_gb(Preset::Wan1_3B, F32, "transformer"),
        ["5", "677MB"]
    );
    // A bf16 UMT5-XXL saved by transformers (e.g. magespace/Wan2.1-T2V-14B-Lightning-
    // Diffusers): 4.94/4.98/1.44 GB.
    assert_eq!(
        shard_gb(Preset::Wan14B, BF16, "text_encoder"),
        ["4.94", "4.98", "1.44"]
    );
}
