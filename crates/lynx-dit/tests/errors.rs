//! Bad folders, configs and inputs give errors that say what is wrong, never panics.

use std::path::{Path, PathBuf};

use burn::tensor::{DType, Tensor};
use lynx_core::Error;
use lynx_dit::{BlockExtras, ExtraKv, WanTransformer};
use lynx_testing::{fixture, fixture_tensor, fixtures_dir, test_device};

fn source() -> PathBuf {
    fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers/transformer")
}

/// A copy of the fixture transformer folder in a fresh temp dir, with `config` edited.
fn copy_transformer(
    name: &str,
    skip: Option<&str>,
    edit: impl Fn(&mut serde_json::Value),
) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lynx-dit-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(source()).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_str().unwrap().to_string();
        if Some(file.as_str()) == skip || file == "config.json" {
            continue;
        }
        std::fs::copy(&path, dir.join(&file)).unwrap();
    }
    let text = std::fs::read_to_string(source().join("config.json")).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut cfg);
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    dir
}

fn load(dir: &Path) -> Result<WanTransformer, Error> {
    WanTransformer::from_pretrained(dir, &test_device(), DType::F32)
}

#[test]
fn missing_shard_is_named() {
    let shard = "diffusion_pytorch_model-00005-of-00009.safetensors";
    let dir = copy_transformer("shard", Some(shard), |_| {});
    let err = load(&dir).unwrap_err();
    assert!(matches!(err, Error::MissingFile { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(shard) && msg.contains("index"), "{msg}");
}

#[test]
fn i2v_config_is_rejected() {
    let dir = copy_transformer("i2v", None, |c| {
        c["image_dim"] = 1280.into();
        c["added_kv_proj_dim"] = 48.into();
    });
    let err = load(&dir).unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("image_dim") && msg.contains("1280"), "{msg}");
    assert!(msg.contains("added_kv_proj_dim"), "{msg}");
    assert!(msg.contains("I2V") && msg.contains("config.json"), "{msg}");
}

#[test]
fn other_unimplemented_options_are_rejected() {
    let dir = copy_transformer("qknorm", None, |c| {
        c["qk_norm"] = "layer_norm".into();
        c["_class_name"] = "WanVACETransformer3DModel".into();
    });
    let msg = load(&dir).unwrap_err().to_string();
    assert!(
        msg.contains("qk_norm") && msg.contains("layer_norm"),
        "{msg}"
    );
    assert!(msg.contains("WanVACETransformer3DModel"), "{msg}");

    let dir = copy_transformer("odd", None, |c| c["attention_head_dim"] = 23.into());
    let msg = load(&dir).unwrap_err().to_string();
    assert!(
        msg.contains("attention_head_dim") && msg.contains("even"),
        "{msg}"
    );
}

#[test]
fn weights_of_another_size_are_named() {
    // The config says 3 heads (width 72), the shards hold width 48: the config is checked
    // against the weights before any layer is built.
    let dir = copy_transformer("size", None, |c| c["num_attention_heads"] = 3.into());
    let err = load(&dir).unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("config.json") && msg.contains("= 72") && msg.contains("[1, 2, 48]"),
        "{msg}"
    );
    assert!(msg.contains("different models"), "{msg}");
}

#[test]
fn missing_config_is_named() {
    let dir = copy_transformer("noconfig", None, |_| {});
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let err = load(&dir).unwrap_err();
    assert!(matches!(err, Error::MissingFile { .. }), "{err:?}");
    assert!(err.to_string().contains("config.json"), "{err}");
}

#[test]
fn bad_inputs_are_errors() {
    let device = test_device();
    let dit = load(&source()).unwrap();
    let fx = fixture("components/dit.safetensors");
    let x: Tensor<5> = fixture_tensor(&fx, "x", &device); // [1, 4, 2, 4, 6]
    let t: Tensor<1> = fixture_tensor(&fx, "timestep", &device);
    let text: Tensor<3> = fixture_tensor(&fx, "text", &device);
    let input_err = |r: lynx_core::Result<Tensor<5>>, needle: &str| {
        let err = r.expect_err("must be rejected");
        assert!(matches!(err, Error::Input(_)), "{err:?}");
        assert!(err.to_string().contains(needle), "{err}");
    };
    // wrong channel count
    let x5 = Tensor::<5>::zeros([1, 5, 2, 4, 6], &device);
    input_err(dit.forward(x5, t.clone(), text.clone(), &[]), "channels");
    // odd width: not a multiple of the 2×2 patch
    let odd = Tensor::<5>::zeros([1, 4, 2, 4, 5], &device);
    input_err(dit.forward(odd, t.clone(), text.clone(), &[]), "patch");
    // text of the wrong width
    let bad_text = Tensor::<3>::zeros([1, 512, 31], &device);
    input_err(dit.forward(x.clone(), t.clone(), bad_text, &[]), "text");
    // three timesteps for one sample
    let t3 = Tensor::<1>::zeros([3], &device);
    input_err(dit.forward(x.clone(), t3, text.clone(), &[]), "timesteps");
    // adapter inputs for the wrong number of blocks
    let one = vec![BlockExtras::default()];
    input_err(
        dit.forward(x.clone(), t.clone(), text.clone(), &one),
        "blocks",
    );
    // extra keys of the wrong width
    let kv = ExtraKv::new(
        Tensor::zeros([1, 4, 40], &device),
        Tensor::zeros([1, 4, 40], &device),
        1.0,
    );
    let extras = vec![
        BlockExtras {
            self_attn: None,
            cross_attn: Some(kv),
        },
        BlockExtras::default(),
    ];
    input_err(dit.forward(x, t, text.clone(), &extras), "block 0");
    // a grid longer than the RoPE table
    let long = Tensor::<5>::zeros([1, 4, 1025, 2, 2], &device);
    let err = dit
        .reference_features(long, text)
        .expect_err("must be rejected");
    assert!(err.to_string().contains("rope_max_seq_len"), "{err}");
}
