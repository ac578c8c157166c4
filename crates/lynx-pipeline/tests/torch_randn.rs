//! Compares `TorchGenerator::randn_*` with `torch.randn` on the CPU, using the fixture written
//! by the reference's `tools/gen_rng_fixtures.py` (`tests/fixtures/components/torch_randn.*`).
//!
//! For every case `caseN` (seed, shape, dtype, optional `then` shape) the fixture holds either
//! `caseN.values` (all values) or, for big tensors, `caseN.head` / `caseN.tail` (first and last
//! 512 values) plus `caseN.sum` / `caseN.sumsq` (f64), and `caseN.then`, a second draw from the
//! same generator (shape `[16]` unless `then` is given).
//!
//! Acceptance: f32/f64 values within 1e-6 relative, bf16/f16 values bit-exact, sums within
//! 1e-6 * sqrt(sumsq) absolute.

use std::path::PathBuf;

use lynx_pipeline::noise::torch_rng::TorchGenerator;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

/// Where the component fixtures live (copied from the reference's).
fn fixture_dir() -> PathBuf {
    lynx_testing::fixtures_dir().join("components")
}
/// Relative tolerance for f32 / f64 values (and for the sums, relative to sqrt(sumsq)).
const REL_TOL: f64 = 1e-6;

/// The dtypes the fixture uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    F32,
    F64,
    Bf16,
    F16,
}

impl Kind {
    fn parse(s: &str) -> Self {
        match s {
            "f32" => Kind::F32,
            "f64" => Kind::F64,
            "bf16" => Kind::Bf16,
            "f16" => Kind::F16,
            other => panic!("unknown dtype {other:?}"),
        }
    }

    /// bf16 / f16 must match bit for bit; f32 / f64 within `REL_TOL`.
    fn exact(self) -> bool {
        matches!(self, Kind::Bf16 | Kind::F16)
    }
}

/// One draw, kept as raw values plus their bit patterns (the bits decide exactness).
struct Draw {
    values: Vec<f64>,
    bits: Vec<u64>,
}

impl Draw {
    fn slice(&self, start: usize, end: usize) -> Draw {
        Draw {
            values: self.values[start..end].to_vec(),
            bits: self.bits[start..end].to_vec(),
        }
    }
}

/// Draws `n` standard normals of `kind` from `g`, as `torch.randn(n, dtype=kind, generator=g)`.
fn randn(g: &mut TorchGenerator, kind: Kind, n: usize) -> Draw {
    match kind {
        Kind::F32 => {
            let v = g.randn_f32(n);
            Draw {
                values: v.iter().map(|&x| f64::from(x)).collect(),
                bits: v.iter().map(|x| u64::from(x.to_bits())).collect(),
            }
        }
        Kind::F64 => {
            let v = g.randn_f64(n);
            Draw {
                values: v.clone(),
                bits: v.iter().map(|x| x.to_bits()).collect(),
            }
        }
        Kind::Bf16 => {
            let v = g.randn_bf16(n);
            Draw {
                values: v.iter().map(|x| x.to_f64()).collect(),
                bits: v.iter().map(|x| u64::from(x.to_bits())).collect(),
            }
        }
        Kind::F16 => {
            let v = g.randn_f16(n);
            Draw {
                values: v.iter().map(|x| x.to_f64()).collect(),
                bits: v.iter().map(|x| u64::from(x.to_bits())).collect(),
            }
        }
    }
}

/// Reads a fixture tensor (f32, f64, bf16 or f16, little endian) as values plus bit patterns.
fn load(st: &SafeTensors, name: &str) -> Option<Draw> {
    let t = st.tensor(name).ok()?;
    let data = t.data();
    let (values, bits): (Vec<f64>, Vec<u64>) = match t.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| {
                let x = f32::from_le_bytes(c.try_into().unwrap());
                (f64::from(x), u64::from(x.to_bits()))
            })
            .unzip(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| {
                let x = f64::from_le_bytes(c.try_into().unwrap());
                (x, x.to_bits())
            })
            .unzip(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| {
                let x = burn::tensor::bf16::from_le_bytes(c.try_into().unwrap());
                (x.to_f64(), u64::from(x.to_bits()))
            })
            .unzip(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| {
                let x = burn::tensor::f16::from_le_bytes(c.try_into().unwrap());
                (x.to_f64(), u64::from(x.to_bits()))
            })
            .unzip(),
        other => panic!("{name}: unexpected dtype {other:?}"),
    };
    Some(Draw { values, bits })
}

/// Outcome of comparing a draw with its reference.
#[derive(Debug, Default)]
struct Comparison {
    /// Number of values compared.
    count: usize,
    /// Number of values whose bit patterns differ.
    differing_bits: usize,
    /// Largest |ours - ref| / |ref| (|ref| floored at 1e-30).
    max_rel: f64,
    /// Number of values outside the tolerance of their dtype.
    failures: usize,
}

/// Compares `ours` with `reference` value by value: bit-exact for `exact` dtypes, else within
/// `REL_TOL` relative.
fn compare(ours: &Draw, reference: &Draw, exact: bool) -> Comparison {
    assert_eq!(ours.values.len(), reference.values.len(), "length mismatch");
    let mut c = Comparison {
        count: ours.values.len(),
        ..Comparison::default()
    };
    for i in 0..c.count {
        let (a, r) = (ours.values[i], reference.values[i]);
        let same_bits = ours.bits[i] == reference.bits[i];
        let rel = if a == r {
            0.0
        } else {
            (a - r).abs() / r.abs().max(1e-30)
        };
        c.max_rel = c.max_rel.max(rel);
        if !same_bits {
            c.differing_bits += 1;
        }
        let ok = if exact { same_bits } else { rel <= REL_TOL };
        if !ok {
            c.failures += 1;
        }
    }
    c
}

/// Product of a JSON shape array.
fn numel(shape: &Value) -> usize {
    shape
        .as_array()
        .expect("shape is an array")
        .iter()
        .map(|d| d.as_u64().expect("dimension") as usize)
        .product()
}

fn fixture_path(name: &str) -> PathBuf {
    fixture_dir().join(name)
}

#[test]
fn torch_randn_fixture() {
    let bytes = std::fs::read(fixture_path("torch_randn.safetensors")).expect("fixture tensors");
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_path("torch_randn.json")).expect("fixture json"),
    )
    .expect("json");
    let cases = meta["cases"].as_array().expect("cases");
    assert!(!cases.is_empty());

    let mut failed = Vec::new();
    for case in cases {
        let key = case["key"].as_str().expect("key");
        let seed = case["seed"].as_u64().expect("seed fits u64");
        let kind = Kind::parse(case["dtype"].as_str().expect("dtype"));
        let n = numel(&case["shape"]);
        let m = case.get("then").map_or(16, numel);

        let mut g = TorchGenerator::manual_seed(seed);
        let first = randn(&mut g, kind, n);
        let then = randn(&mut g, kind, m);

        let mut parts: Vec<(&str, Comparison)> = Vec::new();
        if let Some(values) = load(&st, &format!("{key}.values")) {
            parts.push(("values", compare(&first, &values, kind.exact())));
        } else {
            let head = load(&st, &format!("{key}.head")).expect("head");
            let tail = load(&st, &format!("{key}.tail")).expect("tail");
            let (h, t) = (head.values.len(), tail.values.len());
            parts.push(("head", compare(&first.slice(0, h), &head, kind.exact())));
            parts.push(("tail", compare(&first.slice(n - t, n), &tail, kind.exact())));

            let sum_ref = load(&st, &format!("{key}.sum")).expect("sum").values[0];
            let sumsq_ref = load(&st, &format!("{key}.sumsq")).expect("sumsq").values[0];
            let sum: f64 = first.values.iter().sum();
            let sumsq: f64 = first.values.iter().map(|x| x * x).sum();
            let tol = REL_TOL * sumsq_ref.sqrt();
            let ok =
                (sum - sum_ref).abs() <= tol && (sumsq - sumsq_ref).abs() <= tol * sumsq_ref.sqrt();
            println!(
                "{key}: sum {sum:.9} vs {sum_ref:.9} (|diff| {:.2e}, tol {tol:.2e}), sumsq {sumsq:.6} vs {sumsq_ref:.6}",
                (sum - sum_ref).abs()
            );
            if !ok {
                failed.push(format!("{key}.sum"));
            }
        }
        let then_ref = load(&st, &format!("{key}.then")).expect("then");
        parts.push(("then", compare(&then, &then_ref, kind.exact())));

        for (part, c) in &parts {
            println!(
                "{key} {kind:?} seed={seed} n={n} {part}: {} values, {} bit-different, max rel {:.3e}, {}",
                c.count,
                c.differing_bits,
                c.max_rel,
                if c.failures == 0 { "PASS" } else { "FAIL" }
            );
            if c.failures != 0 {
                failed.push(format!("{key}.{part}"));
            }
        }
    }
    assert!(failed.is_empty(), "failed: {failed:?}");
}
