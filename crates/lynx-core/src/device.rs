//! Run-time device choice from a string (`cpu`, `flex`, `wgpu`, `cuda:N`), and what a
//! device has: dtypes ([`check_dtype`]) and memory ([`available_memory`]).
//!
//! Backends are cargo features of this crate (`flex`, `wgpu`, `cuda`, forwarded to
//! burn); asking for one the build lacks is an error that says which feature to enable.

use burn::tensor::{DType, Device, Tensor};

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

/// Checks that `device` can compute in the float `dtype`, in one message for every
/// model: wgpu has no bf16 (WGSL lacks it), and only f32, f16 and bf16 are model dtypes.
pub fn check_dtype(device: &Device, dtype: DType) -> Result<()> {
    if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
        return Err(Error::Device {
            device: format!("{device:?}"),
            reason: format!("models run in f32, f16 or bf16, not {dtype:?}"),
        });
    }
    if !device.supports_dtype(dtype) {
        return Err(Error::Device {
            device: format!("{device:?}"),
            reason: format!(
                "this device does not compute in {}; use --dtype f32{}",
                dtype_name(dtype),
                if device.supports_dtype(DType::F16) && dtype != DType::F16 {
                    " or f16"
                } else {
                    ""
                }
            ),
        });
    }
    Ok(())
}

/// The short name of a float dtype (`f32`, `bf16`, `f16`), as the CLI spells it.
pub fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        DType::F64 => "f64",
        _ => "a non-float dtype",
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

/// Reads `t` back to the host as f32 values (row-major), naming `what` in the
/// [`Error::Device`] a failed read gives.
pub fn to_host_f32<const D: usize>(t: Tensor<D>, what: &str) -> Result<Vec<f32>> {
    let device = t.device();
    t.try_into_data()
        .map_err(|e| Error::read_back(&device, what, e))?
        .convert_dtype(DType::F32)
        .try_into_vec::<f32>()
        .map_err(|e| Error::read_back(&device, what, e))
}

/// Whether `device` is the CPU (burn's flex backend), whose memory is the host's.
pub fn is_cpu(device: &Device) -> bool {
    format!("{device:?}").contains("Flex")
}

/// The memory `device` can still allocate, in bytes, where it can be known: on the CPU,
/// `MemAvailable` of `/proc/meminfo` (Linux: free memory plus what the kernel can
/// reclaim, page cache included). `None` for GPUs: burn 0.22 reports the memory its
/// pools hold, not what the device has; give a budget instead.
pub fn available_memory(device: &Device) -> Option<u64> {
    if !is_cpu(device) {
        return None;
    }
    meminfo_kib("MemAvailable:").map(|kib| kib * 1024)
}

/// The peak resident memory of this process so far (`VmHWM` of `/proc/self/status`),
/// in bytes, on Linux.
pub fn peak_resident_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    field_kib(&text, "VmHWM:").map(|kib| kib * 1024)
}

fn meminfo_kib(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    field_kib(&text, field)
}

/// The value of a `Field:   1234 kB` line.
fn field_kib(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// What `--device auto` means in this build: `cuda:0` with the `cuda` feature, else
/// `wgpu` with the `wgpu` feature when a hardware adapter is present (a software
/// renderer such as Mesa's lavapipe never counts), else `cpu`.
pub fn auto_device() -> &'static str {
    if cfg!(feature = "cuda") {
        "cuda:0"
    } else if hardware_wgpu_adapter().is_some() {
        "wgpu"
    } else {
        "cpu"
    }
}

/// The name of the first hardware GPU wgpu can see (integrated, discrete or virtual; not
/// a CPU-based software renderer), or `None` (always `None` without the `wgpu` feature).
pub fn hardware_wgpu_adapter() -> Option<String> {
    #[cfg(feature = "wgpu")]
    {
        let instance = wgpu::Instance::default();
        let adapters = block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        adapters
            .iter()
            .map(|a| a.get_info())
            .find(|info| {
                !matches!(
                    info.device_type,
                    wgpu::DeviceType::Cpu | wgpu::DeviceType::Other
                )
            })
            .map(|info| info.name)
    }
    #[cfg(not(feature = "wgpu"))]
    None
}

/// Runs a future to completion on this thread (wgpu's adapter list is async).
#[cfg(feature = "wgpu")]
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(out) => return out,
            Poll::Pending => std::thread::park(),
        }
    }
}

#[cfg(test)]
mod auto_tests {
    use super::*;

    /// `auto` follows the adapter list: wgpu only for a hardware adapter, and Mesa's
    /// lavapipe (the CI machine's only Vulkan device) is a CPU-type adapter, never one.
    #[test]
    fn auto_device_skips_software_renderers() {
        let hardware = hardware_wgpu_adapter();
        eprintln!("hardware wgpu adapter: {hardware:?}");
        if let Some(name) = &hardware {
            assert!(!name.to_ascii_lowercase().contains("llvmpipe"), "{name}");
        }
        let want = if cfg!(feature = "cuda") {
            "cuda:0"
        } else if hardware.is_some() {
            "wgpu"
        } else {
            "cpu"
        };
        assert_eq!(auto_device(), want);
        parse_device(auto_device()).unwrap();
    }
}
