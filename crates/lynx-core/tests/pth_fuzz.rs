//! Mutation fuzzing of the `.pth` index reader over the fixtures: bit flips, interesting
//! integers written over fields, truncations at structural boundaries, deleted,
//! duplicated and inserted ranges, and runs of nesting opcodes. Every case must return
//! `Ok` or `Err` without panicking, within a time bound, and without any single
//! allocation larger than 4 × the input + 1 MiB (checked by a counting allocator).
//!
//! `PTH_FUZZ_CASES` overrides the number of cases per fixture (default 3 000, so
//! 21 000 in all); `PTH_FUZZ_SEED` the seed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lynx_core::pth::read_index;

/// Allocator that records the largest single request made while a limit is set.
struct Counting;

/// Largest single allocation allowed now; 0 = not measuring.
static LIMIT: AtomicUsize = AtomicUsize::new(0);
/// Largest request seen while measuring.
static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn note(size: usize) {
    if LIMIT.load(Ordering::Relaxed) != 0 {
        LARGEST.fetch_max(size, Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// xorshift64*: small, fixed-seed, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

struct Fixture {
    name: String,
    bytes: Vec<u8>,
    /// Offsets where structure starts or ends: zip signatures, tensor data bounds, the
    /// end of the leading pickles.
    boundaries: Vec<usize>,
    /// Where the pickle(s) are (mutations favour them).
    pickle: (usize, usize),
}

fn fixtures() -> Vec<Fixture> {
    let public = lynx_core::testing::fixtures_dir().join("components");
    let synthetic = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/pth");
    let paths = [
        public.join("arcface_ir_se.pth"),
        public.join("arcface_ir_se_legacy.pth"),
        public.join("retinaface_mobile0.25.pth"),
        public.join("retinaface_mobile0.25_legacy_module.pth"),
        public.join("retinaface_photo.pth"),
        // Protocol 4 (FRAME, MEMOIZE, STACK_GLOBAL), every dtype, nesting, Parameters.
        synthetic.join("synthetic_p4.pth"),
        // Legacy storage views.
        synthetic.join("synthetic_legacy.pth"),
    ];
    paths
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            let bytes = std::fs::read(&path).unwrap();
            let tensors = read_index(&bytes, Path::new(&name)).unwrap();
            let mut boundaries: Vec<usize> = tensors
                .iter()
                .flat_map(|t| [t.start as usize, t.end as usize])
                .collect();
            for i in 0..bytes.len().saturating_sub(4) {
                if &bytes[i..i + 2] == b"PK" && bytes[i + 2] < 9 && bytes[i + 3] < 9 {
                    boundaries.push(i);
                }
            }
            let first_data = tensors.iter().map(|t| t.start as usize).min().unwrap();
            boundaries.push(first_data);
            boundaries.sort_unstable();
            boundaries.dedup();
            // The pickle comes before the first tensor in both formats.
            let pickle = (0, first_data.min(64 << 10));
            Fixture {
                name,
                bytes,
                boundaries,
                pickle,
            }
        })
        .collect()
}

const INTERESTING: [u64; 14] = [
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
    u64::MAX - 7,
];

/// Opcode runs that stress nesting and the stack.
const RUNS: [&[u8]; 10] = [
    b"(", b"]", b"}", b")", b"(]", b"h\x00", b"\x85", b"]a", b"Na", b"N",
];

/// Applies one mutation to `data`; returns a short description.
fn mutate(rng: &mut Rng, f: &Fixture, data: &mut Vec<u8>) -> String {
    let len = data.len();
    if len < 2 {
        data.push(rng.next() as u8);
        return "append a byte".into();
    }
    // Favour the pickle region, then the tail (zip directory), then anywhere.
    let pos = |rng: &mut Rng, len: usize| -> usize {
        match rng.below(4) {
            0 | 1 => f.pickle.0 + rng.below(f.pickle.1.min(len) - f.pickle.0),
            2 => len - 1 - rng.below(len.min(70_000)),
            _ => rng.below(len),
        }
    };
    match rng.below(9) {
        0 => {
            let n = 1 + rng.below(8);
            for _ in 0..n {
                let p = pos(rng, len);
                data[p] ^= 1 << rng.below(8);
            }
            format!("flip {n} bits")
        }
        1 => {
            let p = pos(rng, len);
            let width = [1, 2, 4, 8][rng.below(4)];
            let mut v = INTERESTING[rng.below(INTERESTING.len())];
            if rng.below(4) == 0 {
                v = (len as u64)
                    .wrapping_add(rng.below(3) as u64)
                    .wrapping_sub(1);
            }
            let bytes = v.to_le_bytes();
            let end = (p + width).min(len);
            data[p..end].copy_from_slice(&bytes[..end - p]);
            format!("write {v:#x} as {width} bytes at {p}")
        }
        2 => {
            let b = f.boundaries[rng.below(f.boundaries.len())];
            let cut = (b + rng.below(9)).saturating_sub(4).min(len - 1);
            data.truncate(cut);
            format!("truncate at {cut}")
        }
        3 => {
            let cut = pos(rng, len);
            data.truncate(cut);
            format!("truncate at {cut}")
        }
        4 => {
            let p = pos(rng, len);
            let span = if rng.below(2) == 0 { 16 } else { 4096 };
            let n = 1 + rng.below(span);
            let end = (p + n).min(len);
            data.drain(p..end);
            format!("delete {p}..{end}")
        }
        5 => {
            let p = pos(rng, len);
            let span = if rng.below(2) == 0 { 16 } else { 4096 };
            let n = 1 + rng.below(span);
            let end = (p + n).min(len);
            let copy = data[p..end].to_vec();
            let at = pos(rng, len);
            data.splice(at..at, copy);
            format!("duplicate {p}..{end} at {at}")
        }
        6 => {
            let at = pos(rng, len);
            let n = 1 + rng.below(32);
            let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            data.splice(at..at, junk);
            format!("insert {n} random bytes at {at}")
        }
        7 => {
            let at = f.pickle.0 + rng.below(f.pickle.1.min(len) - f.pickle.0);
            let run = RUNS[rng.below(RUNS.len())];
            let n = 1 + rng.below(100_000);
            let bytes: Vec<u8> = run.iter().copied().cycle().take(run.len() * n).collect();
            data.splice(at..at, bytes);
            format!("insert {n} × {run:?} at {at}")
        }
        _ => {
            // Swap two bytes of the pickle: reorders opcodes and arguments.
            let a = pos(rng, len);
            let b = pos(rng, len);
            data.swap(a, b);
            format!("swap bytes {a} and {b}")
        }
    }
}

#[test]
fn mutated_files_never_panic_hang_or_overallocate() {
    let per_fixture: usize = std::env::var("PTH_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let seed: u64 = std::env::var("PTH_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_abcd_0001);
    let time_bound = Duration::from_secs(2);
    let fixtures = fixtures();
    // Panics inside a case are caught and reported below; others print as usual.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if LIMIT.load(Ordering::Relaxed) == 0 {
            default_hook(info);
        }
    }));

    let mut rng = Rng(seed);
    let (mut ok, mut err, mut slowest, mut worst) =
        (0usize, 0usize, Duration::ZERO, (0usize, 1usize));
    let show = std::env::var("PTH_FUZZ_SHOW").is_ok();
    let mut failures = Vec::new();
    for f in &fixtures {
        for case in 0..per_fixture {
            let mut data = f.bytes.clone();
            let rounds = 1 + rng.below(3);
            let what: Vec<String> = (0..rounds)
                .map(|_| mutate(&mut rng, f, &mut data))
                .collect();
            let what = what.join(", then ");
            let limit = 4 * data.len() + (1 << 20);
            LARGEST.store(0, Ordering::Relaxed);
            LIMIT.store(limit, Ordering::Relaxed);
            let t0 = Instant::now();
            let result = catch_unwind(AssertUnwindSafe(|| read_index(&data, Path::new(&f.name))));
            let elapsed = t0.elapsed();
            LIMIT.store(0, Ordering::Relaxed);
            let largest = LARGEST.load(Ordering::Relaxed);
            if largest * worst.1 > worst.0 * limit {
                worst = (largest, limit);
            }
            slowest = slowest.max(elapsed);
            let problem = match &result {
                Err(_) => Some("panicked".to_owned()),
                Ok(_) if elapsed > time_bound => Some(format!("took {elapsed:?}")),
                Ok(_) if largest > limit => Some(format!("allocated {largest} bytes at once")),
                Ok(Ok(_)) => {
                    ok += 1;
                    None
                }
                Ok(Err(e)) => {
                    err += 1;
                    let msg = e.to_string();
                    if show {
                        eprintln!("{msg}");
                    }
                    if !msg.contains(&f.name) || msg.contains('\n') {
                        Some(format!("gave a malformed message: {msg}"))
                    } else {
                        None
                    }
                }
            };
            if let Some(p) = problem {
                failures.push(format!("{} case {case} ({what}): {p}", f.name));
            }
        }
    }
    eprintln!(
        "pth fuzz: {} cases, {ok} Ok, {err} Err, slowest {slowest:?}, largest single \
         allocation {} KiB ({:.0}% of its case's limit), {} failures",
        fixtures.len() * per_fixture,
        worst.0 >> 10,
        100.0 * worst.0 as f64 / worst.1 as f64,
        failures.len()
    );
    for f in failures.iter().take(20) {
        eprintln!("  {f}");
    }
    assert!(failures.is_empty(), "{} fuzz failures", failures.len());
}
