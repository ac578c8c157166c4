//! Mutation fuzzing on stable Rust, for the `fuzz` tests of every crate.
//!
//! A [`Target`] is a parser and the real files it reads (its seeds). Each case copies a
//! seed into a scratch folder, mutates one of its files from a fixed-seed generator
//! (bit flips; integers written over fields, huge, negative and at every width and byte
//! order; truncation at structural boundaries and anywhere; deleted, duplicated and
//! inserted ranges; runs of nesting tokens; for JSON, numbers, strings and types
//! replaced and deep nesting; for tensor data, NaN and infinities; see [`Format`]) and
//! runs the parser on the folder. A case passes when the parser returns `Ok`, or an
//! `Err` whose message is one line naming a file of the case, within the time bound
//! (CPU time, so that a loaded machine does not fail it; and a wall-clock bound 15 times
//! as long), with no single allocation larger than the bound the target allows for the
//! case's size ([`Target::alloc_bound`]). A panic, a slow case or an over-allocation
//! fails the test, which lists the first failures with the mutations that made them; a
//! case that hangs for a minute aborts the test binary after printing the case. The test
//! also fails when fewer cases were rejected (or accepted) than the target expects
//! ([`Target::expect`]): a mutator that stopped mutating, or a parser that stopped
//! checking, shows there.
//!
//! Allocations are seen by [`CountingAlloc`], which each fuzz test binary installs:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: lynx_testing::fuzz::CountingAlloc = lynx_testing::fuzz::CountingAlloc;
//! ```
//!
//! It measures one thread, so fuzz tests run in parallel: each case runs on the single
//! thread of a rayon pool of its own, so the parser's parallel loops (rayon's, and gemm's
//! through rayon) run on that thread too, where its allocations and CPU time are counted.
//! The parsers under fuzz are single-threaded that way.
//!
//! | variable | effect |
//! |---|---|
//! | `LYNX_FUZZ_CASES` | cases per target (default: each target's CI budget; not a number: an error) |
//! | `LYNX_FUZZ_SEED` | seed of the mutations (default fixed; not a number: an error) |
//! | `LYNX_FUZZ_SHOW` | print every error message |
//! | `LYNX_FUZZ_TRACE` | print every case before running it (to find a case that aborts) |

use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod guard;

pub use super::mutate::{Format, Rng};
use super::mutate::{Shape, Tok, format_boundaries, json_tokens, mutate};
pub use guard::CountingAlloc;
use guard::{
    Watchdog, check_allocator, measured, panic_text, quiet_panics_while_measuring, thread_cpu_time,
};
use lynx_core::Result;

/// One file of a seed: its bytes, its layout, and where mutations should go.
#[derive(Debug, Clone)]
pub struct FuzzFile {
    name: String,
    bytes: Vec<u8>,
    format: Format,
    boundaries: Vec<usize>,
    hot: Option<Range<usize>>,
    runs: Vec<Vec<u8>>,
    mutable: bool,
    weight: usize,
    tokens: Vec<(Tok, Range<usize>)>,
    json: Option<Range<usize>>,
    data: Option<Range<usize>>,
}

impl FuzzFile {
    /// `bytes` saved as `name` in each case's folder, mutated as `format` says.
    pub fn new(name: impl Into<String>, bytes: Vec<u8>, format: Format) -> Self {
        let mut boundaries = format_boundaries(format, &bytes);
        let (mut json, mut data) = (None, None);
        match format {
            Format::Json => json = Some(0..bytes.len()),
            Format::Safetensors if bytes.len() >= 8 => {
                let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
                let end = n.saturating_add(8).min(bytes.len());
                json = Some(8..end);
                data = Some(end..bytes.len());
            }
            _ => {}
        }
        let (tokens, marks) = match &json {
            Some(r) => json_tokens(&bytes[r.clone()], r.start),
            None => (Vec::new(), Vec::new()),
        };
        boundaries.extend(marks);
        boundaries.sort_unstable();
        boundaries.dedup();
        Self {
            name: name.into(),
            bytes,
            format,
            boundaries,
            hot: None,
            runs: Vec::new(),
            mutable: true,
            weight: 1,
            tokens,
            json,
            data,
        }
    }

    /// The file at `path`, saved under its own name.
    ///
    /// # Panics
    /// When it cannot be read (a missing fixture).
    pub fn read(path: impl AsRef<Path>, format: Format) -> Self {
        let path = path.as_ref();
        let bytes =
            std::fs::read(path).unwrap_or_else(|e| panic!("fuzz seed {}: {e}", path.display()));
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        Self::new(name.into_owned(), bytes, format)
    }

    /// Saved as `name` instead.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Adds structural offsets (truncation points, fields to overwrite).
    pub fn boundaries(mut self, offsets: impl IntoIterator<Item = usize>) -> Self {
        self.boundaries.extend(offsets);
        self.boundaries.sort_unstable();
        self.boundaries.dedup();
        self
    }

    /// The region half of the byte-level mutations go to (e.g. a pickle).
    pub fn hot(mut self, region: Range<usize>) -> Self {
        self.hot = Some(region);
        self
    }

    /// Byte strings inserted in long runs into the hot region (nesting opcodes).
    pub fn runs(mut self, runs: &[&[u8]]) -> Self {
        self.runs = runs.iter().map(|r| r.to_vec()).collect();
        self
    }

    /// Present in every case but never mutated (e.g. the weights beside a config).
    pub fn fixed(mut self) -> Self {
        self.mutable = false;
        self
    }

    /// How often this file is the one mutated, relative to the seed's other files
    /// (default 1).
    pub fn weight(mut self, weight: usize) -> Self {
        self.weight = weight;
        self
    }

    /// The file's name in the case folder.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The original bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// What a fuzz run found, for the README's table.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Cases run.
    pub cases: usize,
    /// Cases the parser accepted.
    pub ok: usize,
    /// Cases the parser rejected with a proper error.
    pub err: usize,
    /// Cases whose mutations left the file as it was.
    pub unchanged: usize,
    /// The slowest case, in CPU time.
    pub slowest: Duration,
    /// All cases together.
    pub elapsed: Duration,
    /// Largest single allocation of any case, as a fraction of that case's bound.
    pub worst_alloc_fraction: f64,
    /// Descriptions of the failing cases.
    pub failures: Vec<String>,
}

/// A parser, its seed files and its budget.
pub struct Target {
    name: String,
    seeds: Vec<Vec<FuzzFile>>,
    default_cases: usize,
    time_bound: Duration,
    alloc: (usize, usize),
    expect: (f64, f64),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("seeds", &self.seeds.len())
            .finish_non_exhaustive()
    }
}

impl Target {
    /// A target named `name` (in reports and scratch folders); 1 000 cases, 2 s of CPU
    /// per case, allocations up to 4 × the case's bytes + 1 MiB, at least a quarter of
    /// the cases rejected.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            seeds: Vec::new(),
            default_cases: 1000,
            time_bound: Duration::from_secs(2),
            alloc: (4, 1 << 20),
            expect: (0.25, 0.0),
        }
    }

    /// The shares of the cases that must at least be rejected (`Err`) and accepted
    /// (`Ok`: where a mutation can be benign, e.g. a changed tensor value) for the run to
    /// pass: below them, the mutations are not reaching the parser's checks.
    pub fn expect(mut self, rejected: f64, accepted: f64) -> Self {
        self.expect = (rejected, accepted);
        self
    }

    /// Adds a seed: the files of one case folder (at least one of them not
    /// [`FuzzFile::fixed`]).
    pub fn seed(mut self, files: Vec<FuzzFile>) -> Self {
        assert!(
            files.iter().any(|f| f.mutable),
            "a seed needs a file to mutate"
        );
        self.seeds.push(files);
        self
    }

    /// Cases run when `LYNX_FUZZ_CASES` is not set (the CI budget).
    pub fn cases(mut self, n: usize) -> Self {
        self.default_cases = n;
        self
    }

    /// The most CPU time a case may take (the wall-clock bound is 15 times this).
    pub fn time_bound(mut self, bound: Duration) -> Self {
        self.time_bound = bound;
        self
    }

    /// The largest single allocation a case may make: `per_byte` × the case's total
    /// file size + `slack`.
    pub fn alloc_bound(mut self, per_byte: usize, slack: usize) -> Self {
        self.alloc = (per_byte, slack);
        self
    }

    /// Runs the cases, calling `parse` with each case's folder, prints a one-line
    /// summary, and panics listing the failures if there are any.
    ///
    /// # Panics
    /// On failing cases, too few rejected or accepted cases (see [`Target::expect`]), or
    /// a `LYNX_FUZZ_CASES`/`LYNX_FUZZ_SEED` that is not a number.
    pub fn run(self, mut parse: impl FnMut(&Path) -> Result<()> + Send) -> Report {
        let env = |k: &str| std::env::var(k).ok();
        let number = |k: &str| parse_number(k, env(k)).unwrap_or_else(|e| panic!("{e}"));
        let cases: usize = number("LYNX_FUZZ_CASES").unwrap_or(self.default_cases as u64) as usize;
        let seed: u64 = number("LYNX_FUZZ_SEED").unwrap_or(0x5eed_1234_abcd_0001);
        let (show, trace) = (
            env("LYNX_FUZZ_SHOW").is_some(),
            env("LYNX_FUZZ_TRACE").is_some(),
        );
        assert!(
            !self.seeds.is_empty(),
            "fuzz target {} has no seed",
            self.name
        );
        check_allocator();
        quiet_panics_while_measuring();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "fuzz case".into())
            .build()
            .expect("a one-thread pool for the cases");

        let scratch =
            scratch_root().join(format!("lynx-fuzz-{}-{}", std::process::id(), self.name));
        let _ = std::fs::remove_dir_all(&scratch);
        let dirs: Vec<PathBuf> = (0..self.seeds.len())
            .map(|k| scratch.join(format!("seed{k}")))
            .collect();
        for (dir, files) in dirs.iter().zip(&self.seeds) {
            std::fs::create_dir_all(dir).expect("scratch folder");
            for f in files {
                std::fs::write(dir.join(&f.name), &f.bytes).expect("scratch file");
            }
        }
        let watchdog = Watchdog::start(&self.name);
        let started = Instant::now();
        let mut rng = Rng::new(seed ^ name_hash(&self.name));
        let mut report = Report {
            cases,
            ..Report::default()
        };
        let mut dirty: Vec<Option<usize>> = vec![None; self.seeds.len()];
        for case in 0..cases {
            let k = case % self.seeds.len();
            let (files, dir) = (&self.seeds[k], &dirs[k]);
            if let Some(i) = dirty[k].take() {
                std::fs::write(dir.join(&files[i].name), &files[i].bytes).expect("restore");
            }
            let mutable: Vec<usize> = (0..files.len())
                .filter(|&i| files[i].mutable)
                .flat_map(|i| std::iter::repeat_n(i, files[i].weight))
                .collect();
            let i = *rng.pick(&mutable);
            let f = &files[i];
            let mut data = f.bytes.clone();
            let original = data.clone();
            let shape = Shape {
                format: f.format,
                boundaries: &f.boundaries,
                hot: f.hot.clone().unwrap_or(0..f.bytes.len()),
                runs: &f.runs,
                tokens: &f.tokens,
                json: f.json.clone(),
                data: f.data.clone(),
            };
            let rounds = 1 + rng.below(3);
            let what: Vec<String> = (0..rounds)
                .map(|r| mutate(&mut rng, &shape, &mut data, r == 0))
                .collect();
            let what = format!(
                "{} case {case}: {}: {}",
                self.name,
                f.name,
                what.join(", then ")
            );
            std::fs::write(dir.join(&f.name), &data).expect("scratch file");
            dirty[k] = Some(i);
            if data == original {
                report.unchanged += 1;
            }
            drop(original);
            let total: usize = files
                .iter()
                .enumerate()
                .map(|(j, g)| if j == i { data.len() } else { g.bytes.len() })
                .sum();
            drop(data);
            let limit = total
                .saturating_mul(self.alloc.0)
                .saturating_add(self.alloc.1);
            if trace {
                eprintln!("{what}");
            }
            watchdog.begin(&what);
            let t0 = Instant::now();
            let parse = &mut parse;
            let (result, largest, cpu) = pool.install(|| {
                let cpu0 = thread_cpu_time();
                let (result, largest) =
                    measured(limit, || catch_unwind(AssertUnwindSafe(|| parse(dir))));
                (result, largest, thread_cpu_time().saturating_sub(cpu0))
            });
            let elapsed = t0.elapsed();
            watchdog.end();
            report.slowest = report.slowest.max(cpu);
            report.worst_alloc_fraction = report
                .worst_alloc_fraction
                .max(largest as f64 / limit as f64);
            let problem = match result {
                Err(payload) => Some(format!("panicked: {}", panic_text(&payload))),
                Ok(_) if cpu > self.time_bound => Some(format!("took {cpu:?} of CPU")),
                Ok(_) if elapsed > self.time_bound * 15 => Some(format!("took {elapsed:?}")),
                Ok(_) if largest > limit => Some(format!(
                    "allocated {largest} bytes at once (bound {limit} for {total} bytes of files)"
                )),
                Ok(Ok(())) => {
                    report.ok += 1;
                    None
                }
                Ok(Err(e)) => {
                    report.err += 1;
                    let msg = e.to_string();
                    if show {
                        eprintln!("{msg}");
                    }
                    let names_file = msg.contains(&*dir.to_string_lossy())
                        || files.iter().any(|g| msg.contains(&g.name));
                    if !names_file {
                        Some(format!("gave a message naming no file of the case: {msg}"))
                    } else if msg.contains('\n') {
                        Some(format!("gave a message of several lines: {msg:?}"))
                    } else {
                        None
                    }
                }
            };
            if let Some(p) = problem {
                report.failures.push(format!("{what}: {p}"));
            }
        }
        watchdog.stop();
        report.elapsed = started.elapsed();
        let _ = std::fs::remove_dir_all(&scratch);
        report.failures.extend(self.shares_missed(&report));
        eprintln!(
            "fuzz {}: {} cases in {:.1} s, {} Ok, {} Err, {} unchanged, slowest {:?} of CPU, \
             largest single allocation {:.0}% of its bound, {} failures",
            self.name,
            report.cases,
            report.elapsed.as_secs_f64(),
            report.ok,
            report.err,
            report.unchanged,
            report.slowest,
            100.0 * report.worst_alloc_fraction,
            report.failures.len()
        );
        for f in report.failures.iter().take(20) {
            eprintln!("  {f}");
        }
        assert!(
            report.failures.is_empty(),
            "fuzz {}: {} failing cases, the first: {}",
            self.name,
            report.failures.len(),
            report.failures.first().map_or("", String::as_str)
        );
        report
    }
}

impl Target {
    /// The run-level failures: too few cases rejected or accepted for the target's
    /// expectations, or too many mutations that changed nothing.
    fn shares_missed(&self, report: &Report) -> Vec<String> {
        let mut missed = Vec::new();
        if report.cases == 0 {
            return missed;
        }
        let n = report.cases as f64;
        let (rejected, accepted) = self.expect;
        if (report.err as f64) < rejected * n {
            missed.push(format!(
                "{}: {} of {} cases rejected, below the expected {:.0}%: the mutations \
                 do not reach the parser's checks",
                self.name,
                report.err,
                report.cases,
                100.0 * rejected
            ));
        }
        if (report.ok as f64) < accepted * n {
            missed.push(format!(
                "{}: {} of {} cases accepted, below the expected {:.0}%: the parser \
                 rejects what it should read",
                self.name,
                report.ok,
                report.cases,
                100.0 * accepted
            ));
        }
        if report.unchanged * 2 > report.cases {
            missed.push(format!(
                "{}: {} of {} cases left the file unchanged",
                self.name, report.unchanged, report.cases
            ));
        }
        missed
    }
}

/// The number in environment variable `name` (`value`), if set; an error naming the
/// variable if it is not a number.
pub fn parse_number(name: &str, value: Option<String>) -> std::result::Result<Option<u64>, String> {
    match value {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("{name}={v:?} is not a number")),
    }
}

/// Where case folders go: memory (`/dev/shm`) when there is one, since every case
/// writes its files anew and a disk shared with builds makes that the slow part.
fn scratch_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if std::env::var_os("TMPDIR").is_none() && shm.is_dir() {
        let probe = shm.join(format!("lynx-fuzz-probe-{}", std::process::id()));
        if std::fs::write(&probe, b"").is_ok() {
            let _ = std::fs::remove_file(probe);
            return shm.to_path_buf();
        }
    }
    std::env::temp_dir()
}

fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}
