//! Run-time device choice from a string (`cpu`, `flex`, `wgpu`, `cuda:N`).
//!
//! Backends are cargo features of this crate (`flex`, `wgpu`, `cuda`, forwarded to
//! burn); asking for one the build lacks is an error that says which feature to enable.

use burn::tensor::{DType, Device};

use crate::error::{Error, Result};

/// Parses a device name: `cpu` or `flex` (burn's flex CPU backend), `wgpu` (default
/// adapter), `cuda` or `cuda:N`.
pub fn parse_device(name: &str) -> Result<Device> {
    let err = |reason: &str| Error::Device {
        device: name.to_string(),
        reason: reason.to_string(),
    };
    let lower = name.trim().to_ascii_lowercase();
    let (kind, index) = match lower.split_once(':') {
        Some((k, i)) => (
            k.to_string(),
            Some(
                i.parse::<usize>()
                    .map_err(|_| err("the index after `:` must be a number, as in `cuda:0`"))?,
            ),
        ),
        None => (lower.clone(), None),
    };
    match kind.as_str() {
        "cpu" | "flex" => {
            #[cfg(feature = "flex")]
            {
                Ok(Device::flex())
            }
            #[cfg(not(feature = "flex"))]
            {
                Err(err("this build lacks the `flex` feature"))
            }
        }
        "wgpu" => {
            #[cfg(feature = "wgpu")]
            {
                let kind = match index {
                    None => burn::tensor::DeviceKind::DefaultDevice,
                    Some(i) => burn::tensor::DeviceKind::DiscreteGpu(i),
                };
                Ok(Device::wgpu(kind))
            }
            #[cfg(not(feature = "wgpu"))]
            {
                let _ = index;
                Err(err(
                    "this build lacks the `wgpu` feature; rebuild with `--features wgpu`",
                ))
            }
        }
        "cuda" => {
            #[cfg(feature = "cuda")]
            {
                Ok(Device::cuda(index.unwrap_or(0)))
            }
            #[cfg(not(feature = "cuda"))]
            {
                let _ = index;
                Err(err(
                    "this build lacks the `cuda` feature; rebuild with `--features cuda`",
                ))
            }
        }
        _ => Err(err("unknown device; use cpu, wgpu, or cuda:N")),
    }
}

/// Parses a float dtype name: `f32`, `bf16` or `f16`.
pub fn parse_dtype(name: &str) -> Result<DType> {
    match name.trim().to_ascii_lowercase().as_str() {
        "f32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" => Ok(DType::F16),
        other => Err(Error::input(format!(
            "unknown dtype `{other}`; use f32, bf16 or f16"
        ))),
    }
}
