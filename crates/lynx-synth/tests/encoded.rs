//! The synthetic DiT written as the files users hold (`--encoding`): each file loads
//! through the real loaders (layout and encodings found from its content), its
//! dequantized values are within the format's quantization error of the f32 values of
//! the same seed, the GGUF types follow city96's rules as the fixture files made by
//! city96's own tools show, and the K-quant types appear on rows wide enough for them.

use std::path::PathBuf;

use burn::tensor::DType;
use lynx_core::quant::Encoding;
use lynx_dit::{WanConfig, WanTransformer};
use lynx_store::Checkpoint;
use lynx_store::formats::Layout;
use lynx_store::formats::layout::rename;
use lynx_synth::encoded::{DitEncoding, DitFile, Stored, source_values};
use lynx_synth::{Preset, SynthOptions, WeightDtype, write_synthetic};
use lynx_testing::{fixtures_dir, test_device};

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lynx-synth-enc-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Half the step of `float8_e4m3fn` at `x`.
fn fp8_half_step(x: f32) -> f32 {
    let e = if x.abs() > 0.0 {
        x.abs().log2().floor() as i32
    } else {
        -6
    };
    0.5 * 2f32.powi(e.max(-6) - 3)
}

/// The largest error the encoding `enc` (scale `scale`) allows for the values `x` of one
/// tensor, value by value: half a step of the format where each value lies.
fn bounds(enc: Encoding, scale: Option<f32>, x: &[f32]) -> Vec<f32> {
    let amax = |v: &[f32]| v.iter().fold(0f32, |a, b| a.max(b.abs()));
    let up = 1.001;
    match enc {
        Encoding::F32 => vec![0.0; x.len()],
        Encoding::F16 => x
            .iter()
            .map(|v| v.abs() * 2f32.powi(-11) + 2f32.powi(-25))
            .collect(),
        Encoding::BF16 => x.iter().map(|v| v.abs() * 2f32.powi(-8)).collect(),
        Encoding::F8_E4M3 => {
            let s = scale.unwrap_or(1.0);
            x.iter().map(|v| s * fp8_half_step(v / s) * up).collect()
        }
        Encoding::Q8_0 => x
            .chunks(32)
            .flat_map(|b| vec![0.5 * amax(b) / 127.0 * up; b.len()])
            .collect(),
        Encoding::Q6_K => x
            .chunks(256)
            .flat_map(|b| {
                let d = amax(b) / 31.0 / 127.0 * up;
                b.chunks(16)
                    .flat_map(|g| vec![0.5 * (amax(g) / 31.0 + d) * up; 16])
                    .collect::<Vec<_>>()
            })
            .collect(),
        Encoding::Q4_K => x
            .chunks(256)
            .flat_map(|b| {
                let groups: Vec<(f32, f32)> = b
                    .chunks(32)
                    .map(|g| {
                        let lo = g.iter().fold(0f32, |a, &v| a.min(v));
                        let hi = g.iter().fold(f32::MIN, |a, &v| a.max(v));
                        (-lo, hi)
                    })
                    .collect();
                let dmin = groups.iter().fold(0f32, |a, g| a.max(g.0)) / 63.0 * up;
                let need: Vec<f32> = groups
                    .iter()
                    .map(|(m, hi)| (hi + m + dmin) / 15.0)
                    .collect();
                let d = need.iter().fold(0f32, |a, &v| a.max(v)) / 63.0 * up;
                need.iter()
                    .flat_map(|n| vec![0.5 * (n + d) * up + 1e-7; 32])
                    .collect::<Vec<_>>()
            })
            .collect(),
        other => panic!("no bound for {other:?}"),
    }
}

/// Every tensor of `ckpt` (a written encoded file) against `want(key)`: within
/// [`bounds`]; returns the encodings seen. A plain float tensor (no encoding recorded)
/// is F32 at 4 bytes per value, else `half` (the 16-bit type the file keeps).
fn check_values(
    ckpt: &Checkpoint,
    label: &str,
    half: Encoding,
    want: impl Fn(&str) -> Vec<f32>,
) -> Vec<Encoding> {
    let mut seen = Vec::new();
    let keys: Vec<String> = ckpt.keys().map(str::to_string).collect();
    for key in keys {
        let got = ckpt.read_f32(&key).unwrap();
        let enc = ckpt.encoding(&key).unwrap_or_else(|| {
            let bytes = ckpt.stored_bytes(&key).unwrap();
            if bytes == 4 * got.len() as u64 {
                Encoding::F32
            } else {
                assert_eq!(bytes, 2 * got.len() as u64, "{label} {key}: stored bytes");
                half
            }
        });
        let x = want(&key);
        assert_eq!(got.len(), x.len(), "{label} {key}");
        let b = bounds(enc, ckpt.scale(&key), &x);
        for (i, ((g, w), b)) in got.iter().zip(&x).zip(&b).enumerate() {
            assert!(
                (g - w).abs() <= *b,
                "{label} {key} ({enc:?}) [{i}]: {g} vs {w}, bound {b}"
            );
        }
        if !seen.contains(&enc) {
            seen.push(enc);
        }
    }
    seen
}

/// The tiny preset in each encoding, through `write_synthetic` as `lynx synth-model
/// --encoding` runs it.
#[test]
fn tiny_dit_in_each_encoding_loads_and_matches_its_f32_values() {
    let out = tmp("tiny");
    let base = || SynthOptions {
        lite: false,
        ..SynthOptions::default()
    };
    write_synthetic(
        Preset::Tiny,
        WeightDtype::F32,
        &out.join("f32"),
        &base(),
        |_| {},
    )
    .unwrap();
    let plain = Checkpoint::open(out.join("f32/Wan2.1-T2V-tiny-Diffusers/transformer")).unwrap();
    let config = out.join("f32/Wan2.1-T2V-tiny-Diffusers/transformer");
    let formats: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures_dir().join("components/formats.json")).unwrap(),
    )
    .unwrap();
    let device = test_device();
    for enc in DitEncoding::ALL {
        let dir = out.join(enc.name());
        let opts = SynthOptions {
            encoding: Some(enc),
            ..base()
        };
        let report = write_synthetic(Preset::Tiny, WeightDtype::F32, &dir, &opts, |_| {}).unwrap();
        let file = dir.join(enc.file_name("wan2.1_t2v_tiny"));
        let written = report
            .files
            .iter()
            .find(|f| f.path == file)
            .expect("the DiT file");
        assert_eq!(
            std::fs::metadata(&file).unwrap().len(),
            written.bytes,
            "{enc:?}: planned size"
        );
        // The folder keeps the transformer's config only.
        let tr = dir.join("Wan2.1-T2V-tiny-Diffusers/transformer");
        assert_eq!(std::fs::read_dir(&tr).unwrap().count(), 1, "{enc:?}");

        let ckpt = Checkpoint::open(&file).unwrap();
        let prefixed = enc == DitEncoding::Fp8Scaled;
        assert_eq!(ckpt.layout(), Layout::WanDitNative { prefixed }, "{enc:?}");
        let mut keys: Vec<&str> = ckpt.keys().collect();
        let mut want: Vec<&str> = plain.keys().collect();
        keys.sort();
        want.sort();
        assert_eq!(keys, want, "{enc:?}: the diffusers keys");
        let half = match enc {
            DitEncoding::Fp8 | DitEncoding::Fp8Scaled => Encoding::BF16,
            DitEncoding::Q8_0 | DitEncoding::Q4KM => Encoding::F16,
        };
        let seen = check_values(&ckpt, enc.name(), half, |k| plain.read_f32(k).unwrap());
        let expect = match enc {
            DitEncoding::Fp8 | DitEncoding::Fp8Scaled => Encoding::F8_E4M3,
            DitEncoding::Q8_0 => Encoding::Q8_0,
            DitEncoding::Q4KM => Encoding::F16, // every K row of the tiny model falls back
        };
        assert!(seen.contains(&expect), "{enc:?}: {seen:?}");
        if prefixed {
            assert!(ckpt.keys().all(|k| ckpt.encoding(k) != Some(Encoding::F8_E4M3)
                || ckpt.scale(k).is_some()));
        }

        // city96's tools gave the fixture files of the same model these types.
        let fixture = match enc {
            DitEncoding::Q8_0 => Some("wan_Q8_0.gguf"),
            DitEncoding::Q4KM => Some("wan_Q4_K.gguf"),
            _ => None,
        };
        if let Some(fixture) = fixture {
            let types = &formats["files"][fixture]["tensor_type_by_name"];
            let plan = DitFile::plan(&WanConfig::load(&config).unwrap(), enc).unwrap();
            for t in &plan.tensors {
                let name = format!("{:?}", t.stored);
                assert_eq!(
                    types[&t.name].as_str(),
                    Some(name.as_str()),
                    "{enc:?} {}",
                    t.name
                );
            }
            assert_eq!(plan.tensors.len(), types.as_object().unwrap().len());
        }

        // The model loads and runs from it (the configs from the folder).
        let dit = WanTransformer::from_weights(&config, &file, &device, DType::F32, false)
            .unwrap_or_else(|e| panic!("{enc:?}: {e}"));
        assert_eq!(dit.blocks().len(), 2);
    }
    std::fs::remove_dir_all(out).ok();
}

/// Rows of 256 (the tiny model at width 256): Q4_K_M writes Q4_K and Q6_K blocks as the
/// recipe says, and they decode within their error.
#[test]
fn k_quants_on_wide_rows() {
    let mut c = Preset::Tiny.model_set().dit;
    (c.num_attention_heads, c.attention_head_dim, c.ffn_dim) = (2, 128, 512);
    c.num_layers = 1;
    let dir = tmp("wide");
    for enc in [DitEncoding::Q4KM, DitEncoding::Q8_0] {
        let plan = DitFile::plan(&c, enc).unwrap();
        let path = dir.join(enc.file_name("wide"));
        let bytes = plan.write(7, &path, |_| {}).unwrap();
        assert_eq!(bytes, plan.bytes);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), plan.bytes);
        let ckpt = Checkpoint::open(&path).unwrap();
        let layout = ckpt.layout();
        let by_key = |k: &str| {
            plan.tensors
                .iter()
                .find(|t| rename(layout, &t.name).as_deref() == Some(k))
                .unwrap_or_else(|| panic!("{k}"))
        };
        let seen = check_values(&ckpt, enc.name(), Encoding::F16, |k| {
            source_values(by_key(k), 7)
        });
        let stored = |name: &str| plan.tensors.iter().find(|t| t.name == name).unwrap().stored;
        match enc {
            DitEncoding::Q4KM => {
                assert!(seen.contains(&Encoding::Q4_K) && seen.contains(&Encoding::Q6_K));
                assert_eq!(stored("blocks.0.self_attn.v.weight"), Stored::Q6_K);
                assert_eq!(stored("blocks.0.ffn.2.weight"), Stored::Q6_K);
                assert_eq!(stored("blocks.0.self_attn.q.weight"), Stored::Q4_K);
                assert_eq!(stored("blocks.0.ffn.0.weight"), Stored::Q4_K);
            }
            _ => assert_eq!(stored("blocks.0.cross_attn.o.weight"), Stored::Q8_0),
        }
        // Never quantized: the embeddings, the head, the modulation, the norms.
        for name in [
            "head.head.weight",
            "text_embedding.0.weight",
            "time_projection.1.weight",
        ] {
            assert_eq!(stored(name), Stored::F16, "{name}");
        }
        for name in [
            "blocks.0.modulation",
            "head.modulation",
            "patch_embedding.weight",
        ] {
            assert_eq!(stored(name), Stored::F32, "{name}");
        }
    }
    std::fs::remove_dir_all(dir).ok();
}
