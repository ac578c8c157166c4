//! The NVIDIA driver, asked directly before burn's CUDA runtime is: whether it loads,
//! which devices it reports, and how much memory a device has free.
//!
//! burn 0.22's CUDA runtime (cubecl-cuda, through cudarc) panics where the driver is
//! missing; this module loads `libcuda.so.1` itself at run time (`dlopen`, through
//! `libloading`), calls no cubecl or cudarc code, and turns every failure into a
//! sentence. It mirrors no upstream file: the calls are the CUDA driver API's (`cuInit`,
//! `cuDeviceGetCount`, `cuDeviceGetName`, `cuDeviceTotalMem_v2`, and `cuMemGetInfo_v2` on
//! the device's primary context, the context cubecl-cuda runs on). It is compiled in
//! every build, so that its tests run without the `cuda` feature; only a `cuda` build
//! uses it to choose devices.

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::sync::OnceLock;

type CuResult = c_int;
type CuDevice = c_int;
type CuContext = *mut c_void;

/// The driver's file names, tried in order (the first one's failure is the one told).
const LIBRARIES: &[&str] = if cfg!(windows) {
    &["nvcuda.dll"]
} else {
    &["libcuda.so.1", "libcuda.so"]
};

/// The NVIDIA driver as this process sees it: loaded, started (`cuInit`), with at least
/// one device. Get it with [`cuda_driver`].
pub struct CudaDriver {
    api: Api,
    /// The CUDA version the driver supports, as `cuDriverGetVersion` gives it (12040
    /// for 12.4).
    pub version: i32,
    /// The devices, in CUDA's order: `cuda:N` is `devices[N]`.
    pub devices: Vec<CudaGpu>,
}

impl std::fmt::Debug for CudaDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaDriver")
            .field("version", &self.version)
            .field("devices", &self.devices)
            .finish()
    }
}

/// One device the driver reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaGpu {
    /// Its name (`NVIDIA GeForce RTX 4090`).
    pub name: String,
    /// Its memory, in bytes.
    pub total_memory: u64,
}

/// The driver's entry points, resolved once; `_library` keeps them loaded.
struct Api {
    init: unsafe extern "C" fn(c_uint) -> CuResult,
    driver_get_version: unsafe extern "C" fn(*mut c_int) -> CuResult,
    device_get_count: unsafe extern "C" fn(*mut c_int) -> CuResult,
    device_get: unsafe extern "C" fn(*mut CuDevice, c_int) -> CuResult,
    device_get_name: unsafe extern "C" fn(*mut c_char, c_int, CuDevice) -> CuResult,
    device_total_mem: unsafe extern "C" fn(*mut usize, CuDevice) -> CuResult,
    primary_ctx_retain: unsafe extern "C" fn(*mut CuContext, CuDevice) -> CuResult,
    primary_ctx_release: unsafe extern "C" fn(CuDevice) -> CuResult,
    ctx_push_current: unsafe extern "C" fn(CuContext) -> CuResult,
    ctx_pop_current: unsafe extern "C" fn(*mut CuContext) -> CuResult,
    mem_get_info: unsafe extern "C" fn(*mut usize, *mut usize) -> CuResult,
    get_error_name: unsafe extern "C" fn(CuResult, *mut *const c_char) -> CuResult,
    _library: libloading::Library,
}

impl Api {
    /// Loads the first of `candidates` that opens and resolves every entry point.
    fn load(candidates: &[&str]) -> Result<Api, String> {
        let mut first_error = None;
        for name in candidates {
            // SAFETY: loading runs the library's initialisers; the NVIDIA driver's are
            // meant to run in any process that uses CUDA.
            match unsafe { libloading::Library::new(name) } {
                Ok(library) => return Api::resolve(library, name),
                Err(e) => {
                    first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        Err(format!(
            "no CUDA driver found ({})",
            first_error.unwrap_or_else(|| "no library name to try".into())
        ))
    }

    fn resolve(library: libloading::Library, name: &str) -> Result<Api, String> {
        /// The entry point `symbol`, typed as the field it is assigned to.
        fn get<T: Copy>(
            library: &libloading::Library,
            name: &str,
            symbol: &str,
        ) -> Result<T, String> {
            // SAFETY: every field's type is the C signature the CUDA driver API documents
            // for the symbol assigned to it (`cuda.h`).
            unsafe { library.get::<T>(symbol.as_bytes()) }
                .map(|s| *s)
                .map_err(|e| format!("{name} is not a usable CUDA driver: no `{symbol}` ({e})"))
        }
        Ok(Api {
            init: get(&library, name, "cuInit")?,
            driver_get_version: get(&library, name, "cuDriverGetVersion")?,
            device_get_count: get(&library, name, "cuDeviceGetCount")?,
            device_get: get(&library, name, "cuDeviceGet")?,
            device_get_name: get(&library, name, "cuDeviceGetName")?,
            device_total_mem: get(&library, name, "cuDeviceTotalMem_v2")?,
            primary_ctx_retain: get(&library, name, "cuDevicePrimaryCtxRetain")?,
            primary_ctx_release: get(&library, name, "cuDevicePrimaryCtxRelease_v2")?,
            ctx_push_current: get(&library, name, "cuCtxPushCurrent_v2")?,
            ctx_pop_current: get(&library, name, "cuCtxPopCurrent_v2")?,
            mem_get_info: get(&library, name, "cuMemGetInfo_v2")?,
            get_error_name: get(&library, name, "cuGetErrorName")?,
            _library: library,
        })
    }

    /// `Ok` for `CUDA_SUCCESS`, else the call and the error's name.
    fn check(&self, call: &str, status: CuResult) -> Result<(), String> {
        if status == 0 {
            return Ok(());
        }
        let mut name: *const c_char = std::ptr::null();
        // SAFETY: `cuGetErrorName` writes a pointer to a static string, or leaves it null.
        let known = unsafe { (self.get_error_name)(status, &mut name) } == 0 && !name.is_null();
        let name = if known {
            // SAFETY: a non-null result is a NUL-terminated string owned by the driver.
            unsafe { std::ffi::CStr::from_ptr(name) }
                .to_string_lossy()
                .into_owned()
        } else {
            format!("error {status}")
        };
        Err(format!("{call}: {name}"))
    }
}

impl CudaDriver {
    /// Loads the driver from the first of `candidates` that opens, starts it and lists
    /// its devices.
    fn probe(candidates: &[&str]) -> Result<CudaDriver, String> {
        let api = Api::load(candidates)?;
        // SAFETY (every call below): the arguments are valid pointers to locals of the
        // types the driver API writes, and device handles come from `cuDeviceGet`.
        api.check("cuInit", unsafe { (api.init)(0) })
            .map_err(|e| format!("the CUDA driver did not start ({e})"))?;
        let mut version = 0;
        api.check("cuDriverGetVersion", unsafe {
            (api.driver_get_version)(&mut version)
        })?;
        let mut count = 0;
        api.check("cuDeviceGetCount", unsafe {
            (api.device_get_count)(&mut count)
        })?;
        if count <= 0 {
            return Err("the CUDA driver reports no device".into());
        }
        let mut devices = Vec::new();
        for ordinal in 0..count {
            let mut device = 0;
            api.check("cuDeviceGet", unsafe {
                (api.device_get)(&mut device, ordinal)
            })?;
            let mut name = [0 as c_char; 256];
            api.check("cuDeviceGetName", unsafe {
                (api.device_get_name)(name.as_mut_ptr(), name.len() as c_int - 1, device)
            })?;
            let mut bytes = 0usize;
            api.check("cuDeviceTotalMem_v2", unsafe {
                (api.device_total_mem)(&mut bytes, device)
            })?;
            let name: Vec<u8> = name
                .iter()
                .take_while(|&&c| c != 0)
                .map(|&c| c as u8)
                .collect();
            devices.push(CudaGpu {
                name: String::from_utf8_lossy(&name).into_owned(),
                total_memory: bytes as u64,
            });
        }
        Ok(CudaDriver {
            api,
            version,
            devices,
        })
    }

    /// The driver's CUDA version as `major.minor` (`12.4`).
    pub fn version_string(&self) -> String {
        format!("{}.{}", self.version / 1000, self.version % 1000 / 10)
    }

    /// `Ok` when `cuda:index` exists, else why not, naming the devices there are.
    pub fn check_index(&self, index: usize) -> Result<&CudaGpu, String> {
        self.devices.get(index).ok_or_else(|| {
            let n = self.devices.len();
            let names: Vec<String> = (self.devices.iter().enumerate())
                .map(|(i, gpu)| format!("cuda:{i} {}", gpu.name))
                .collect();
            format!(
                "the CUDA driver reports {n} device{} ({})",
                if n == 1 { "" } else { "s" },
                names.join(", ")
            )
        })
    }

    /// The memory free on `cuda:index` now, in bytes (`cuMemGetInfo` on its primary
    /// context, which burn's CUDA runtime shares: what the process already holds there
    /// is not free).
    pub fn free_memory(&self, index: usize) -> Result<u64, String> {
        self.check_index(index)?;
        let api = &self.api;
        let ordinal =
            c_int::try_from(index).map_err(|_| format!("cuda:{index}: no such device"))?;
        let mut device = 0;
        // SAFETY (every call below): valid out-pointers; the context pushed is the one
        // just retained, popped and released before returning.
        api.check("cuDeviceGet", unsafe {
            (api.device_get)(&mut device, ordinal)
        })?;
        let mut ctx: CuContext = std::ptr::null_mut();
        api.check("cuDevicePrimaryCtxRetain", unsafe {
            (api.primary_ctx_retain)(&mut ctx, device)
        })?;
        let pushed = api.check("cuCtxPushCurrent_v2", unsafe {
            (api.ctx_push_current)(ctx)
        });
        let (mut free, mut total) = (0usize, 0usize);
        let info = pushed.and_then(|()| {
            let info = api.check("cuMemGetInfo_v2", unsafe {
                (api.mem_get_info)(&mut free, &mut total)
            });
            let mut popped: CuContext = std::ptr::null_mut();
            let pop = api.check("cuCtxPopCurrent_v2", unsafe {
                (api.ctx_pop_current)(&mut popped)
            });
            info.and(pop)
        });
        let released = api.check("cuDevicePrimaryCtxRelease_v2", unsafe {
            (api.primary_ctx_release)(device)
        });
        info.and(released)?;
        Ok(free as u64)
    }
}

/// The NVIDIA driver, probed once per process: `Err` says why this machine cannot run
/// CUDA (`no CUDA driver found (libcuda.so.1: cannot open shared object file: …)`, `the
/// CUDA driver did not start (cuInit: CUDA_ERROR_NO_DEVICE)`, `the CUDA driver reports
/// no device`). Never panics; compiled in every build, used by a `cuda` build's
/// [`parse_device`](super::parse_device), [`auto_device`](super::auto_device) and
/// [`available_memory`](super::available_memory).
pub fn cuda_driver() -> Result<&'static CudaDriver, &'static str> {
    static DRIVER: OnceLock<Result<CudaDriver, String>> = OnceLock::new();
    DRIVER
        .get_or_init(|| CudaDriver::probe(LIBRARIES))
        .as_ref()
        .map_err(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for `libcuda` with two devices (the real one needs a GPU), compiled
    /// with `cc` into a temporary folder; `variant` is a `-D` flag: `NO_DEVICE` makes
    /// `cuInit` fail as on a machine with the driver's libraries and no GPU, `ZERO`
    /// reports no device. Contexts are checked: a second retain before the release, a
    /// push over a current context, or `cuMemGetInfo` without one, fail.
    fn fake_driver(variant: &str) -> String {
        const SOURCE: &str = r#"
            #include <stddef.h>
            #include <stdio.h>
            static int started, retained[2];
            static void *current;
            int cuInit(unsigned flags) {
            #ifdef NO_DEVICE
                return 100;
            #endif
                started = flags == 0;
                return started ? 0 : 1;
            }
            int cuDriverGetVersion(int *v) { *v = 12040; return 0; }
            int cuDeviceGetCount(int *n) {
                if (!started) return 3;
            #ifdef ZERO
                *n = 0;
            #else
                *n = 2;
            #endif
                return 0;
            }
            int cuDeviceGet(int *d, int i) { if (i < 0 || i > 1) return 101; *d = i; return 0; }
            int cuDeviceGetName(char *s, int len, int d) { snprintf(s, len, "Fake GPU %d", d); return 0; }
            int cuDeviceTotalMem_v2(size_t *b, int d) { *b = (size_t)(d + 1) << 30; return 0; }
            int cuDevicePrimaryCtxRetain(void **c, int d) {
                if (retained[d]) return 999;
                retained[d] = 1; *c = &retained[d]; return 0;
            }
            int cuDevicePrimaryCtxRelease_v2(int d) { if (!retained[d]) return 201; retained[d] = 0; return 0; }
            int cuCtxPushCurrent_v2(void *c) { if (current) return 999; current = c; return 0; }
            int cuCtxPopCurrent_v2(void **c) { *c = current; current = NULL; return 0; }
            int cuMemGetInfo_v2(size_t *f, size_t *t) {
                if (!current) return 201;
                int d = (int *)current - retained;
                *t = (size_t)(d + 1) << 30; *f = *t / 4 + d; return 0;
            }
            int cuGetErrorName(int e, const char **s) {
                *s = e == 100 ? "CUDA_ERROR_NO_DEVICE" : e == 201 ? "CUDA_ERROR_INVALID_CONTEXT" : NULL;
                return *s ? 0 : 1;
            }
        "#;
        let dir =
            std::env::temp_dir().join(format!("lynx-fake-cuda-{}-{variant}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let source = dir.join("fake.c");
        std::fs::write(&source, SOURCE).unwrap();
        let library = dir.join(format!("libfakecuda-{variant}.so"));
        let status = std::process::Command::new("cc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(&library)
            .arg(format!("-D{variant}"))
            .arg(&source)
            .status()
            .expect("cc (the tests build a stand-in libcuda with it)");
        assert!(status.success(), "cc failed on {}", source.display());
        library.to_str().unwrap().to_string()
    }

    #[test]
    fn a_missing_driver_is_named() {
        let err =
            CudaDriver::probe(&["liblynx-no-such-cuda.so.1", "libcuda-neither.so"]).unwrap_err();
        assert!(
            err.starts_with("no CUDA driver found (liblynx-no-such-cuda.so.1: "),
            "{err}"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_library_without_the_driver_api_is_refused() {
        let err = CudaDriver::probe(&["libm.so.6"]).unwrap_err();
        assert!(
            err.contains("libm.so.6 is not a usable CUDA driver: no `cuInit`"),
            "{err}"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn devices_and_free_memory_from_the_driver() {
        let driver =
            CudaDriver::probe(&["liblynx-no-such-cuda.so.1", &fake_driver("FULL")]).unwrap();
        assert_eq!(driver.version_string(), "12.4");
        assert_eq!(
            driver.devices,
            [
                CudaGpu {
                    name: "Fake GPU 0".into(),
                    total_memory: 1 << 30
                },
                CudaGpu {
                    name: "Fake GPU 1".into(),
                    total_memory: 2 << 30
                },
            ]
        );
        assert_eq!(driver.check_index(1).unwrap().name, "Fake GPU 1");
        let err = driver.check_index(2).unwrap_err();
        assert_eq!(
            err,
            "the CUDA driver reports 2 devices (cuda:0 Fake GPU 0, cuda:1 Fake GPU 1)"
        );
        // Twice: the context is released and popped each time (the fake refuses a
        // second retain or push otherwise).
        for _ in 0..2 {
            assert_eq!(driver.free_memory(0).unwrap(), (1 << 30) / 4);
            assert_eq!(driver.free_memory(1).unwrap(), (2 << 30) / 4 + 1);
        }
        assert_eq!(driver.free_memory(2).unwrap_err(), err);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_driver_without_devices_says_so() {
        let err = CudaDriver::probe(&[&fake_driver("NO_DEVICE")]).unwrap_err();
        assert_eq!(
            err,
            "the CUDA driver did not start (cuInit: CUDA_ERROR_NO_DEVICE)"
        );
        let err = CudaDriver::probe(&[&fake_driver("ZERO")]).unwrap_err();
        assert_eq!(err, "the CUDA driver reports no device");
    }
}
