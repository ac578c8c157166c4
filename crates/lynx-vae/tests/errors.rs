//! Bad inputs, configs and folders give errors that say what is wrong.

use std::path::PathBuf;

use burn::tensor::{DType, Tensor};
use lynx_core::Error;
use lynx_testing::{fixtures_dir, test_device};
use lynx_vae::WanVae;

fn tiny_dir() -> PathBuf {
    fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers/vae")
}

fn vae() -> WanVae {
    WanVae::from_pretrained(tiny_dir(), &test_device(), DType::F32).expect("tiny VAE loads")
}

/// A copy of the tiny `vae/` folder with `edit` applied to its config text.
fn edited_copy(name: &str, edit: impl Fn(&str) -> String) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lynx-vae-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = std::fs::read_to_string(tiny_dir().join("config.json")).unwrap();
    std::fs::write(dir.join("config.json"), edit(&config)).unwrap();
    std::fs::copy(
        tiny_dir().join("diffusion_pytorch_model.safetensors"),
        dir.join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    dir
}

fn encode_err(dims: [usize; 5]) -> String {
    let video = Tensor::<5>::zeros(dims, &test_device());
    vae()
        .encode(video)
        .expect_err("must be rejected")
        .to_string()
}

#[test]
fn wrong_channel_counts() {
    let err = encode_err([1, 4, 1, 16, 16]);
    assert!(err.contains("got 4 channels"), "{err}");
    let latents = Tensor::<5>::zeros([1, 16, 2, 4, 6], &test_device());
    let err = vae().decode(latents).unwrap_err().to_string();
    assert!(
        err.contains("16 channels") && err.contains("z_dim is 4"),
        "{err}"
    );
    let empty = Tensor::<5>::zeros([1, 4, 0, 4, 6], &test_device());
    assert!(vae().decode(empty).is_err());
}

#[test]
fn frame_counts_must_be_4k_plus_1() {
    let err = encode_err([1, 3, 4, 16, 16]);
    assert!(
        err.contains("4k+1") && err.contains("got 4") && err.contains("use 1 or 5"),
        "{err}"
    );
    let err = encode_err([1, 3, 7, 16, 16]);
    assert!(err.contains("use 5 or 9"), "{err}");
    assert!(encode_err([1, 3, 0, 16, 16]).contains("4k+1"));
}

#[test]
fn sizes_must_be_multiples_of_8() {
    let err = encode_err([1, 3, 1, 30, 48]);
    assert!(
        err.contains("30×48") && err.contains("multiple of 8"),
        "{err}"
    );
    assert!(encode_err([1, 3, 5, 32, 44]).contains("multiple of 8"));
}

#[test]
fn missing_folder_and_files() {
    let err = WanVae::from_pretrained("/nonexistent/vae", &test_device(), DType::F32).unwrap_err();
    assert!(matches!(err, Error::MissingFile { .. }), "{err}");

    let dir = std::env::temp_dir().join(format!("lynx-vae-nofile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(tiny_dir().join("config.json"), dir.join("config.json")).unwrap();
    let err = WanVae::from_pretrained(&dir, &test_device(), DType::F32).unwrap_err();
    assert!(matches!(err, Error::MissingFile { .. }), "{err}");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let err = WanVae::from_pretrained(&dir, &test_device(), DType::F32).unwrap_err();
    assert!(err.to_string().contains("config.json"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn config_that_does_not_fit_the_weights() {
    let dir = edited_copy("base16", |c| {
        c.replace("\"base_dim\": 8", "\"base_dim\": 16")
    });
    let err = WanVae::from_pretrained(&dir, &test_device(), DType::F32).unwrap_err();
    let msg = err.to_string();
    // Checked against the weights before any layer is built.
    assert!(matches!(err, Error::Config { .. }), "{msg}");
    assert!(
        msg.contains("base_dim")
            && msg.contains("encoder.conv_in.weight")
            && msg.contains("[8, 3, 3, 3, 3]")
            && msg.contains("different models"),
        "{msg}"
    );

    let dir = edited_copy("temporal", |c| {
        c.replace(
            "\"temperal_downsample\": [\n    false,",
            "\"temperal_downsample\": [\n    true,",
        )
    });
    let err = WanVae::from_pretrained(&dir, &test_device(), DType::F32)
        .unwrap_err()
        .to_string();
    assert!(err.contains("temperal_downsample"), "{err}");

    let dir = edited_copy("zdim", |c| c.replace("\"z_dim\": 4", "\"z_dim\": 5"));
    let err = WanVae::from_pretrained(&dir, &test_device(), DType::F32)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("latents_mean") && err.contains("z_dim"),
        "{err}"
    );
}
