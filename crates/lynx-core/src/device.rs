//! Run-time device choice from a string (`cpu`, `flex`, `wgpu`, `cuda:N`), and what a
//! device has: dtypes ([`check_dtype`]) and memory ([`available_memory`]).
//!
//! Backends are cargo features of this crate (`flex`, `wgpu`, `cuda`, forwarded to
//! burn); asking for one the build lacks is an error that says which feature to enable.
//! In a `cuda` build the NVIDIA driver is asked first ([`cuda_driver`]): a machine
//! without one gets an error or, for `auto`, the next choice, never burn's panic.

mod cuda;

use burn::tensor::{DType, Device, Tensor};

pub use cuda::{CudaDriver, CudaGpu, cuda_driver};

use crate::error::{Error, Result};

/// Parses a device name: `cpu` or `flex` (burn's flex CPU backend), `wgpu` (default
/// adapter), `cuda` or `cuda:N`. `cuda:N` is checked with the driver ([`cuda_driver`]):
/// without one, or past its last device, it is an [`Error::Device`] saying which.
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
                let index = index.unwrap_or(0);
                let driver = cuda_driver().map_err(err)?;
                driver.check_index(index).map_err(|why| err(&why))?;
                Ok(Device::cuda(index))
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
/// reclaim, page cache included); on a CUDA device, what the driver reports free
/// ([`CudaDriver::free_memory`]: `cuMemGetInfo`, which counts what this process already
/// holds there as used). `None` for wgpu: burn 0.22 reports the memory its pools hold,
/// not what the device has; give a budget instead.
pub fn available_memory(device: &Device) -> Option<u64> {
    if is_cpu(device) {
        return meminfo_kib("MemAvailable:").map(|kib| kib * 1024);
    }
    let index = cuda_index(device)?;
    cuda_driver().ok()?.free_memory(index).ok()
}

/// The `N` of a `cuda:N` device (from burn's `Debug` form, `…Cuda(N)…`), or `None` for
/// any other device.
pub fn cuda_index(device: &Device) -> Option<usize> {
    let text = format!("{device:?}");
    let (_, after) = text.rsplit_once("Cuda(")?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    if !after[digits.len()..].starts_with(')') {
        return None;
    }
    digits.parse().ok()
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

/// What `--device auto` means in this build, and why a better device was passed over:
/// see [`auto_device`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoDevice {
    /// The device, as [`parse_device`] takes it: `cuda:0`, `wgpu` or `cpu`.
    pub name: &'static str,
    /// Why CUDA was passed over in a `cuda` build (`no CUDA driver found (libcuda.so.1:
    /// …)`); `None` when the first choice was taken or the build has no `cuda`.
    pub passed_over: Option<String>,
}

/// What `--device auto` means in this build: `cuda:0` with the `cuda` feature when the
/// NVIDIA driver loads and reports a device ([`cuda_driver`]); else `wgpu` with the
/// `wgpu` feature when a hardware adapter is present (a software renderer such as Mesa's
/// lavapipe never counts); else `cpu`.
pub fn auto_device() -> AutoDevice {
    let mut passed_over = None;
    if cfg!(feature = "cuda") {
        match cuda_driver() {
            Ok(_) => {
                return AutoDevice {
                    name: "cuda:0",
                    passed_over,
                };
            }
            Err(why) => passed_over = Some(why.to_string()),
        }
    }
    let name = if hardware_wgpu_adapter().is_some() {
        "wgpu"
    } else {
        "cpu"
    };
    AutoDevice { name, passed_over }
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

    /// `auto` follows the driver and the adapter list: CUDA only in a `cuda` build with a
    /// driver, wgpu only for a hardware adapter, and Mesa's lavapipe (the CI machine's
    /// only Vulkan device) is a CPU-type adapter, never one.
    #[test]
    fn auto_device_skips_software_renderers() {
        let hardware = hardware_wgpu_adapter();
        eprintln!("hardware wgpu adapter: {hardware:?}");
        if let Some(name) = &hardware {
            assert!(!name.to_ascii_lowercase().contains("llvmpipe"), "{name}");
        }
        let cuda = cfg!(feature = "cuda") && cuda_driver().is_ok();
        let want = if cuda {
            "cuda:0"
        } else if hardware.is_some() {
            "wgpu"
        } else {
            "cpu"
        };
        let auto = auto_device();
        assert_eq!(auto.name, want);
        assert_eq!(
            auto.passed_over.is_some(),
            cfg!(feature = "cuda") && !cuda,
            "{auto:?}"
        );
        parse_device(auto.name).unwrap();
    }

    /// Only CUDA devices have an index here, and a CPU's memory is the host's.
    #[test]
    fn cuda_index_of_other_devices() {
        let cpu = parse_device("cpu").unwrap();
        assert_eq!(cuda_index(&cpu), None);
        assert!(available_memory(&cpu).is_some_and(|b| b > 0));
    }
}
