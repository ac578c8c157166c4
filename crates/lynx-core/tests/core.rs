//! lynx-core's own parts: config parsing, the one attention function, device strings.

use std::path::PathBuf;

use lynx_core::Error;
use lynx_testing::{fixtures_dir, test_device};

fn tiny_transformer() -> PathBuf {
    fixtures_dir().join("Wan2.1-T2V-tiny-Diffusers/transformer")
}

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct NeedsDim {
    num_layers: usize,
    dim_that_is_absent: usize,
}

#[test]
fn config_missing_field_is_named() {
    let path = tiny_transformer().join("config.json");
    let err = lynx_core::config::load_json::<NeedsDim>(&path).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("dim_that_is_absent") && msg.contains("config.json"),
        "{msg}"
    );
    let err = lynx_core::config::load_json::<NeedsDim>("/nonexistent/config.json").unwrap_err();
    assert!(matches!(err, Error::MissingFile { .. }), "{err:?}");
}

#[test]
fn parity_fused_attention_vs_naive() {
    use burn::tensor::{Distribution, Tensor};
    let device = test_device();
    let q = Tensor::<4>::random([1, 2, 300, 24], Distribution::Normal(0.0, 1.0), &device);
    let k = Tensor::<4>::random([1, 2, 200, 24], Distribution::Normal(0.0, 1.0), &device);
    let v = Tensor::<4>::random([1, 2, 200, 24], Distribution::Normal(0.0, 1.0), &device);
    for scale in [None, Some(1.0), Some(0.05)] {
        let a = lynx_core::nn::attention(q.clone(), k.clone(), v.clone(), None, scale);
        let b = lynx_core::nn::attention_naive(q.clone(), k.clone(), v.clone(), None, scale);
        lynx_testing::assert_close(&format!("attention scale {scale:?}"), &a, &b, 1e-5);
    }
    let bias = Tensor::<4>::random([1, 2, 300, 200], Distribution::Normal(0.0, 1.0), &device);
    let a = lynx_core::nn::attention(
        q.clone(),
        k.clone(),
        v.clone(),
        Some(bias.clone()),
        Some(1.0),
    );
    let b = lynx_core::nn::attention_naive(q, k, v, Some(bias), Some(1.0));
    lynx_testing::assert_close("attention with bias", &a, &b, 1e-5);
}

#[test]
fn device_strings() {
    assert!(lynx_core::device::parse_device("cpu").is_ok());
    let err = lynx_core::device::parse_device("tpu")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tpu") && err.contains("unknown device"),
        "{err}"
    );
    #[cfg(not(feature = "cuda"))]
    {
        let err = lynx_core::device::parse_device("cuda:0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }
    assert!(lynx_core::device::parse_dtype("bf16").is_ok());
    assert!(lynx_core::device::parse_dtype("int8").is_err());
}
