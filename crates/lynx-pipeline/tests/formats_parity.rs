//! The models built from the weight files users hold (`tests/fixtures/formats`: native
//! Wan keys, fp8, ComfyUI scaled fp8, GGUF) against the references of
//! `components/formats.safetensors`, which the generator computed from the same files
//! dequantized in f32: each DiT file's plain pass, the UMT5 hidden state of the scaled
//! fp8 encoder, and the native VAE's decode. The configs come from the tiny diffusers
//! folder, as `--model` gives them beside `--transformer/--text-encoder/--vae`.

use burn::tensor::{DType, Int, Tensor, TensorData};
use lynx_dit::{WanConfig, WanTransformer};
use lynx_store::Checkpoint;
use lynx_testing::{assert_close, fixture, fixture_tensor, fixtures_dir, test_device};
use lynx_text::{Umt5Config, Umt5Encoder};
use lynx_vae::{VaeConfig, WanVae};

fn tiny() -> std::path::PathBuf {
    fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers")
}

fn formats(file: &str) -> Checkpoint {
    Checkpoint::open(fixtures_dir().join("formats").join(file)).unwrap()
}

/// The DiT files of `components/formats.json`.
fn dit_files() -> Vec<String> {
    let text = std::fs::read_to_string(fixtures_dir().join("components/formats.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["files"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| v["kind"] == "dit")
        .map(|(k, _)| k.clone())
        .collect()
}

#[test]
fn parity_dit_from_each_format() {
    let device = test_device();
    let fx = fixture("components/dit.safetensors");
    let refs = fixture("components/formats.safetensors");
    let files = dit_files();
    assert!(files.len() >= 6, "{files:?}");
    for file in files {
        let ckpt = formats(&file);
        let config = WanConfig::load(tiny().join("transformer")).unwrap();
        let dit = ckpt
            .build(&device, DType::F32, |w| WanTransformer::load(w, config))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let x: Tensor<5> = fixture_tensor(&fx, "x", &device);
        let t: Tensor<1> = fixture_tensor(&fx, "timestep", &device);
        let text: Tensor<3> = fixture_tensor(&fx, "text", &device);
        let out = dit.forward(x, t, text, &[]).unwrap();
        let stem = file.rsplit_once('.').unwrap().0;
        let key = format!("dit_out_{stem}");
        let want: Tensor<5> = fixture_tensor(&refs, &key, &device);
        assert_close(&key, &out, &want, 1e-5);
    }
}

fn ints(key: &str) -> Vec<i64> {
    fixture("components/text.safetensors")
        .read(key)
        .unwrap()
        .try_into_vec::<i64>()
        .unwrap()
}

#[test]
fn parity_umt5_scaled_fp8() {
    let device = test_device();
    let config = Umt5Config::load(tiny().join("text_encoder/config.json")).unwrap();
    let ckpt = formats("umt5_fp8_scaled.safetensors");
    let enc = ckpt
        .build(&device, DType::F32, |w| Umt5Encoder::load(w, &config))
        .unwrap();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ints("raw_ids_0"), [1, 512]), &device);
    let mask = Tensor::<2, Int>::from_data(TensorData::new(ints("raw_mask_0"), [1, 512]), &device);
    let out = enc.forward(ids, Some(mask)).unwrap();
    let refs = fixture("components/formats.safetensors");
    let want: Tensor<3> = fixture_tensor(&refs, "text_hidden_fp8_scaled", &device);
    assert_close("text_hidden_fp8_scaled", &out, &want, 1e-4);
}

#[test]
fn parity_vae_native_keys() {
    let device = test_device();
    let config = VaeConfig::load(tiny().join("vae/config.json")).unwrap();
    let ckpt = formats("vae_native.safetensors");
    let vae = ckpt
        .build(&device, DType::F32, |w| WanVae::load(w, config))
        .unwrap();
    let fx = fixture("components/vae.safetensors");
    let latents: Tensor<5> = fixture_tensor(&fx, "latents", &device);
    let got = vae.decode(latents).unwrap();
    let refs = fixture("components/formats.safetensors");
    let want: Tensor<5> = fixture_tensor(&refs, "decoded_native", &device);
    assert_close("decoded_native", &got, &want, 1e-4);
}
