//! lynx-testing (not published; a dev-dependency of every crate): the device under test,
//! the bundled fixtures, and a comparison that prints relative L2 and max-abs error on
//! failure.
//!
//! `LYNX_TEST_DEVICE` picks the device (`flex` by default; `wgpu` in CI's second pass,
//! which needs this crate's `wgpu` feature). [`fuzz`] is the mutation fuzzer behind
//! every crate's `fuzz` tests. [`wan_original`] builds the tiny model in the original
//! Wan release's folder layout.

pub mod formats;
pub mod fuzz;
mod mutate;
pub mod wan_original;

use std::path::PathBuf;

use burn::tensor::{DType, Device, Tensor};

use lynx_store::Checkpoint;

/// The device the tests run on, from `LYNX_TEST_DEVICE` (default `flex`).
///
/// # Panics
/// When the variable names a device this build cannot make (tests only).
pub fn test_device() -> Device {
    let name = std::env::var("LYNX_TEST_DEVICE").unwrap_or_else(|_| "flex".into());
    lynx_core::device::parse_device(&name).unwrap_or_else(|e| panic!("LYNX_TEST_DEVICE: {e}"))
}

/// `tests/fixtures` at the workspace root: the parity fixtures copied from the
/// reference, so tests run on a fresh clone.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// A fixture file under [`fixtures_dir`], opened as a checkpoint.
pub fn fixture(name: &str) -> Checkpoint {
    let path = fixtures_dir().join(name);
    Checkpoint::open(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// Reads fixture tensor `key` as f32 on `device`.
pub fn fixture_tensor<const D: usize>(ckpt: &Checkpoint, key: &str, device: &Device) -> Tensor<D> {
    ckpt.tensor::<D>(key, device, DType::F32)
        .unwrap_or_else(|e| panic!("fixture tensor: {e}"))
}

/// Relative L2 error `‖a − b‖ / ‖b‖` and max absolute error.
#[derive(Debug, Clone, Copy)]
pub struct Diff {
    /// `‖a − b‖ / ‖b‖` (`‖a − b‖` when `b` is zero).
    pub rel_l2: f64,
    /// `max |a − b|`.
    pub max_abs: f64,
}

/// Compares `actual` against `expected` (computed on the host in f64).
pub fn diff<const D: usize>(actual: &Tensor<D>, expected: &Tensor<D>) -> Diff {
    assert_eq!(
        actual.dims(),
        expected.dims(),
        "shape mismatch: actual {:?}, expected {:?}",
        actual.dims(),
        expected.dims()
    );
    let a = actual
        .to_data()
        .convert_dtype(DType::F64)
        .try_to_vec::<f64>()
        .unwrap();
    let b = expected
        .to_data()
        .convert_dtype(DType::F64)
        .try_to_vec::<f64>()
        .unwrap();
    let (mut num, mut den, mut max_abs) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(&b) {
        let d = x - y;
        num += d * d;
        den += y * y;
        max_abs = max_abs.max(d.abs());
        if !x.is_finite() {
            max_abs = f64::INFINITY;
            num = f64::INFINITY;
        }
    }
    let rel_l2 = if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    };
    Diff { rel_l2, max_abs }
}

/// Asserts relative L2 error ≤ `tol`, printing both error measures either way.
#[track_caller]
pub fn assert_close<const D: usize>(
    name: &str,
    actual: &Tensor<D>,
    expected: &Tensor<D>,
    tol: f64,
) {
    let d = diff(actual, expected);
    eprintln!(
        "{name}: rel_l2 = {:.3e}, max_abs = {:.3e} (tolerance {tol:.0e})",
        d.rel_l2, d.max_abs
    );
    assert!(
        d.rel_l2 <= tol,
        "{name}: relative L2 error {:.3e} exceeds {tol:.0e} (max abs error {:.3e})",
        d.rel_l2,
        d.max_abs
    );
}
