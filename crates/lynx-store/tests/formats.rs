//! The weight files users hold (`tests/fixtures/formats`, made by the shared
//! `gen_format_fixtures.py`; see its FORMATS.md): every tensor stored quantized — fp8,
//! ComfyUI scaled fp8, each GGUF block type — decodes to the reference values of
//! `dequantized.safetensors`, and native key layouts are presented under the diffusers
//! names.

use burn::tensor::DType;
use lynx_core::device::to_host_f32;
use lynx_core::quant::DeviceQuant;
use lynx_store::Checkpoint;
use lynx_store::formats::{Layout, layout};
use lynx_testing::{fixtures_dir, test_device};

fn formats_dir() -> std::path::PathBuf {
    fixtures_dir().join("formats")
}

/// The files to test, from `components/formats.json`.
fn files() -> Vec<String> {
    let text = std::fs::read_to_string(fixtures_dir().join("components/formats.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["files"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.as_str() != "dequantized.safetensors")
        .cloned()
        .collect()
}

fn rel(a: &[f32], b: &[f32]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        num += ((x - y) as f64).powi(2);
        den += (*y as f64).powi(2);
    }
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

#[test]
fn every_quantized_tensor_matches_the_reference() {
    let refs = Checkpoint::open(formats_dir().join("dequantized.safetensors")).unwrap();
    let mut checked = std::collections::BTreeMap::<String, usize>::new();
    for file in files() {
        let ckpt = Checkpoint::open(formats_dir().join(&file)).unwrap();
        let stem = file.rsplit_once('.').unwrap().0;
        let prefix = format!("{stem}/");
        for rkey in refs.keys().filter(|k| k.starts_with(&prefix)) {
            let stored = &rkey[prefix.len()..];
            let name = layout::rename(ckpt.layout(), stored)
                .unwrap_or_else(|| panic!("{file}: `{stored}` dropped by the layout"));
            let got = ckpt
                .read_f32(&name)
                .unwrap_or_else(|e| panic!("{file}: `{stored}` as `{name}`: {e}"));
            let want = refs.read_f32(rkey).unwrap();
            assert_eq!(
                ckpt.shape(&name).unwrap(),
                refs.shape(rkey).unwrap(),
                "{file}: {stored}"
            );
            let r = rel(&got, &want);
            assert!(r <= 1e-7, "{file}: `{stored}`: rel L2 {r:e}");
            let enc = ckpt.encoding(&name).map(|e| e.name()).unwrap_or("plain");
            *checked.entry(enc.to_string()).or_default() += 1;
        }
    }
    eprintln!("checked per encoding: {checked:?}");
    // Every block type the fixtures exercise was decoded at least once.
    for enc in [
        "F8_E4M3", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
    ] {
        assert!(
            checked.get(enc).copied().unwrap_or(0) > 0,
            "{enc} never checked: {checked:?}"
        );
    }
}

/// Every quantized tensor of the fixtures re-laid for a device and decoded there with
/// burn's ops ([`DeviceQuant`]: what `Linear` does on a GPU) equals the reference — on the
/// test device: flex in the flex pass, wgpu (lavapipe) in CI's parity pass.
#[test]
fn parity_on_device_decode_of_every_quantized_tensor() {
    let device = test_device();
    let refs = Checkpoint::open(formats_dir().join("dequantized.safetensors")).unwrap();
    let mut checked = std::collections::BTreeMap::<&str, usize>::new();
    for file in files() {
        let ckpt = Checkpoint::open(formats_dir().join(&file)).unwrap();
        let prefix = format!("{}/", file.rsplit_once('.').unwrap().0);
        for rkey in refs.keys().filter(|k| k.starts_with(&prefix)) {
            let name = layout::rename(ckpt.layout(), &rkey[prefix.len()..]).unwrap();
            let Some(q) = ckpt.quantized(&name).unwrap() else {
                continue;
            };
            let Some(on_device) = DeviceQuant::upload(&q, &device) else {
                continue;
            };
            let enc = q.encoding();
            let numel = q.rows() * q.width();
            assert_eq!(
                Some(on_device.byte_len()),
                DeviceQuant::byte_len_of(enc, numel),
                "{file}: {name}"
            );
            let decoded = on_device.decode();
            assert_eq!(decoded.dims(), [q.rows(), q.width()], "{file}: {name}");
            let got = to_host_f32(decoded, &name).unwrap();
            let r = rel(&got, &refs.read_f32(rkey).unwrap());
            assert!(r <= 1e-7, "{file}: `{name}` ({}): rel L2 {r:e}", enc.name());
            *checked.entry(enc.name()).or_default() += 1;
        }
    }
    eprintln!("decoded on {device:?} per encoding: {checked:?}");
    for enc in [
        "F8_E4M3", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
    ] {
        assert!(
            checked.contains_key(enc),
            "{enc} never decoded: {checked:?}"
        );
    }
}

#[test]
fn layouts_are_detected_from_the_keys() {
    let open = |f: &str| Checkpoint::open(formats_dir().join(f)).unwrap();
    let bf16 = open("wan_native_bf16.safetensors");
    assert_eq!(bf16.layout(), Layout::WanDitNative { prefixed: true });
    assert!(bf16.contains("blocks.0.attn1.to_q.weight"));
    assert!(bf16.contains("condition_embedder.time_proj.weight"));
    assert!(bf16.contains("scale_shift_table"));
    let fp8 = open("wan_native_fp8_e4m3fn.safetensors");
    assert_eq!(fp8.layout(), Layout::WanDitNative { prefixed: false });
    assert_eq!(
        fp8.encoding("blocks.0.ffn.net.0.proj.weight")
            .map(|e| e.name()),
        Some("F8_E4M3")
    );
    let vae = open("vae_native.safetensors");
    assert_eq!(vae.layout(), Layout::WanVaeNative { res_blocks: 1 });
    // Same names as the diffusers VAE of the tiny folder.
    let diffusers = fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers/vae");
    let want: Vec<String> = Checkpoint::open(&diffusers)
        .unwrap()
        .keys()
        .map(str::to_string)
        .collect();
    let got: Vec<String> = vae.keys().map(str::to_string).collect();
    assert_eq!(got, want);
    let gguf = open("wan_Q4_K.gguf");
    assert_eq!(gguf.metadata("general.architecture"), Some("wan"));
    assert_eq!(
        gguf.shape("patch_embedding.weight"),
        Some(&[48, 4, 1, 2, 2][..])
    );
    let umt5 = open("umt5_fp8_scaled.safetensors");
    assert_eq!(umt5.layout(), Layout::AsStored);
    assert!(!umt5.contains("scaled_fp8") && !umt5.contains("spiece_model"));
    let spiece = umt5.embedded("spiece_model").unwrap();
    let file =
        std::fs::read(fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers/tokenizer/spiece.model"));
    assert_eq!(spiece, file.unwrap());
    assert!(
        umt5.scale("encoder.block.0.layer.0.SelfAttention.q.weight")
            .is_some()
    );
    // Decoded reads in bf16 go through the same path.
    let q = umt5
        .read_as(
            "encoder.block.0.layer.0.SelfAttention.q.weight",
            DType::BF16,
        )
        .unwrap();
    assert_eq!(q.shape().to_vec(), vec![32, 32]);
}

#[test]
fn the_format_is_read_from_the_content_not_the_name() {
    let tmp = std::env::temp_dir().join(format!("lynx-formats-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let renamed = tmp.join("weights.bin");
    std::fs::copy(formats_dir().join("wan_Q8_0.gguf"), &renamed).unwrap();
    let ckpt = Checkpoint::open(&renamed).unwrap();
    assert!(ckpt.contains("blocks.0.ffn.net.2.weight"));
    let renamed = tmp.join("model.gguf");
    std::fs::copy(formats_dir().join("umt5_fp8_scaled.safetensors"), &renamed).unwrap();
    assert!(
        Checkpoint::open(&renamed)
            .unwrap()
            .contains("shared.weight")
    );
    std::fs::remove_dir_all(&tmp).ok();
}

/// ComfyUI's newer files may declare each quantized layer in the safetensors header's
/// `_quantization_metadata` (`{"layers": {"<layer>": {"format": …}}}`) instead of a
/// `.comfy_quant` tensor: a declaration that matches is read as the same weights; one
/// for a format lynx-rs does not read, for a weight not stored so, or for a layer the
/// file does not have is refused naming the layer.
#[test]
fn quantization_metadata_in_the_header_is_checked() {
    use safetensors::Dtype;
    use safetensors::tensor::TensorView;
    let dir = std::env::temp_dir().join(format!("lynx-qmeta-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // fp8 e4m3fn bytes of 1, 2, -1.5, 0.5, ... and a scale of 0.25; a plain f32 norm.
    let fp8: Vec<u8> = vec![0x38, 0x40, 0xbc, 0x30, 0x38, 0x40, 0xbc, 0x30];
    let scale = 0.25f32.to_le_bytes();
    let norm: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let write = |name: &str, meta: Option<&str>| {
        let tensors = [
            (
                "blocks.0.ffn.0.weight",
                TensorView::new(Dtype::F8_E4M3, vec![2, 4], &fp8).unwrap(),
            ),
            (
                "blocks.0.ffn.0.weight_scale",
                TensorView::new(Dtype::F32, vec![], &scale).unwrap(),
            ),
            (
                "blocks.0.norm.weight",
                TensorView::new(Dtype::F32, vec![4], &norm).unwrap(),
            ),
        ];
        let meta = meta.map(|m| {
            std::collections::HashMap::from([("_quantization_metadata".to_string(), m.to_string())])
        });
        let path = dir.join(name);
        safetensors::serialize_to_file(tensors, meta, &path).unwrap();
        path
    };
    let values = |path: &std::path::Path| {
        Checkpoint::open(path)
            .unwrap()
            .read_as("blocks.0.ffn.0.weight", DType::F32)
            .unwrap()
            .try_to_vec::<f32>()
            .unwrap()
    };
    let plain = values(&write("plain.safetensors", None));
    assert_eq!(plain[..4], [0.25, 0.5, -0.375, 0.125]);
    let declared = write(
        "declared.safetensors",
        Some(
            r#"{"format_version": "1.0", "layers": {"blocks.0.ffn.0": {"format": "float8_e4m3fn"}}}"#,
        ),
    );
    assert_eq!(values(&declared), plain);
    for (name, meta, want) in [
        (
            "nvfp4.safetensors",
            r#"{"layers": {"blocks.0.ffn.0": {"format": "nvfp4"}}}"#,
            "`blocks.0.ffn.0` declares format `nvfp4`",
        ),
        (
            "e5m2.safetensors",
            r#"{"layers": {"blocks.0.ffn.0": {"format": "float8_e5m2"}}}"#,
            "declares float8_e5m2 but its weight is not stored so",
        ),
        (
            "norm.safetensors",
            r#"{"layers": {"blocks.0.norm": {"format": "float8_e4m3fn"}}}"#,
            "`blocks.0.norm` declares float8_e4m3fn",
        ),
        (
            "absent.safetensors",
            r#"{"layers": {"blocks.9.ffn.0": {"format": "float8_e4m3fn"}}}"#,
            "`blocks.9.ffn.0`",
        ),
        (
            "json.safetensors",
            r#"{"layers": ["blocks.0.ffn.0"]}"#,
            "_quantization_metadata",
        ),
    ] {
        let path = write(name, Some(meta));
        let e = Checkpoint::open(&path).err().unwrap().to_string();
        assert!(e.contains(name) && e.contains(want), "{e}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
