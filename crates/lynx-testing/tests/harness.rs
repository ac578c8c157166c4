//! Self-tests of the fuzz harness (`lynx_testing::fuzz`): a parser that panics, one that
//! over-allocates (on its own thread or in a rayon loop), one that burns CPU, one that
//! accepts everything and one that rejects everything must each fail the run; a parser
//! that checks what it reads passes, with both outcomes counted.

use std::path::Path;
use std::time::Duration;

use lynx_core::{Error, Result};
use lynx_testing::fuzz::{CountingAlloc, Format, FuzzFile, Target, parse_number};
use rayon::prelude::*;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// A small JSON seed: a list of numbers with a count.
fn target(name: &str) -> Target {
    let json = br#"{"count": 4, "values": [1.5, -2, 3e2, 0], "name": "seed"}"#.to_vec();
    Target::new(name)
        .cases(120)
        .seed(vec![FuzzFile::new("seed.json", json, Format::Json)])
}

/// A parser that checks the seed's structure and names the file in its errors.
fn strict(dir: &Path) -> Result<()> {
    let path = dir.join("seed.json");
    let text = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let v: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| Error::format(&path, "JSON", e))?;
    let values = v["values"]
        .as_array()
        .ok_or_else(|| Error::format(&path, "JSON", "no `values` list"))?;
    let count = v["count"]
        .as_u64()
        .ok_or_else(|| Error::format(&path, "JSON", "no `count`"))?;
    if values.len() as u64 != count || values.iter().any(|x| !x.is_number()) {
        return Err(Error::format(
            &path,
            "JSON",
            "`count` does not match `values`",
        ));
    }
    Ok(())
}

#[test]
fn a_checking_parser_passes_with_both_outcomes() {
    let report = target("selftest_strict").expect(0.25, 0.01).run(strict);
    assert_eq!(report.cases, 120);
    assert!(report.err > 30 && report.ok > 0, "{report:?}");
    assert_eq!(report.ok + report.err, report.cases);
}

#[test]
#[should_panic(expected = "panicked: the parser fell over")]
fn a_panicking_parser_fails() {
    target("selftest_panic").run(|dir| {
        strict(dir)?;
        panic!("the parser fell over");
    });
}

#[test]
#[should_panic(expected = "allocated")]
fn an_over_allocating_parser_fails() {
    target("selftest_alloc").run(|dir| {
        let big = vec![0u8; 64 << 20];
        std::hint::black_box(&big);
        strict(dir)
    });
}

/// An allocation in a rayon loop (on a pool thread, not the caller's) is counted too.
#[test]
#[should_panic(expected = "allocated")]
fn an_over_allocating_parallel_parser_fails() {
    target("selftest_alloc_rayon").run(|dir| {
        (0..8).into_par_iter().for_each(|_| {
            let big = vec![0u8; 64 << 20];
            std::hint::black_box(&big);
        });
        strict(dir)
    });
}

#[test]
#[should_panic(expected = "of CPU")]
fn a_slow_parser_fails() {
    target("selftest_slow")
        .cases(4)
        .time_bound(Duration::from_millis(20))
        .run(|dir| {
            // A fixed amount of work (the bound is on CPU time, which a loaded machine
            // does not shorten): 10⁸ dependent steps, well over 20 ms on any CPU.
            let mut x = 0u64;
            for _ in 0..100_000_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            std::hint::black_box(x);
            strict(dir)
        });
}

/// A parser that checks nothing (or a mutator that does not mutate) rejects nothing.
#[test]
#[should_panic(expected = "cases rejected, below the expected")]
fn a_parser_that_accepts_everything_fails() {
    target("selftest_accept_all").run(|_| Ok(()));
}

#[test]
#[should_panic(expected = "cases accepted, below the expected")]
fn a_parser_that_rejects_everything_fails_where_acceptance_is_expected() {
    target("selftest_reject_all")
        .expect(0.25, 0.05)
        .run(|dir| Err(Error::format(dir.join("seed.json"), "JSON", "never")));
}

#[test]
fn the_case_count_must_be_a_number() {
    assert_eq!(parse_number("LYNX_FUZZ_CASES", None), Ok(None));
    assert_eq!(
        parse_number("LYNX_FUZZ_CASES", Some("250".into())),
        Ok(Some(250))
    );
    let err = parse_number("LYNX_FUZZ_CASES", Some("lots".into())).unwrap_err();
    assert!(
        err.contains("LYNX_FUZZ_CASES") && err.contains("lots"),
        "{err}"
    );
    assert!(parse_number("LYNX_FUZZ_SEED", Some("-3".into())).is_err());
}
