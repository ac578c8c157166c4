//! Prompt cleaning against the reference: the expected strings were produced by the
//! Wan pipeline's `prompt_clean` (ftfy 6.3.1, Python `html`, `regex`) and by
//! `ftfy.fix_text` alone.

use lynx_text::clean::{basic_clean, fix_text, html_unescape, whitespace_clean};
use lynx_text::prompt_clean;

/// (input, `prompt_clean(input)`, `ftfy.fix_text(input)`)
const CASES: &[(&str, &str, &str)] = &[
    (
        "  A   cat\u{9}\u{a} sits  ",
        "A cat sits",
        "  A   cat\u{9}\u{a} sits  ",
    ),
    (
        "caf&eacute; &amp;amp; bar",
        "caf\u{e9} & bar",
        "caf\u{e9} & bar",
    ),
    (
        "caf\u{c3}\u{a9} \u{e2}\u{20ac}\u{153}quoted\u{e2}\u{20ac}\u{9d}",
        "caf\u{e9} \"quoted\"",
        "caf\u{e9} \"quoted\"",
    ),
    (
        "\u{fb01}ne \u{ff2c}\u{ff2f}\u{ff35}\u{ff24}\u{3000}\u{ff2e}\u{ff2f}\u{ff29}\u{ff33}\u{ff25}\u{ff33} \u{ff73}\u{ff9d}",
        "fine LOUD NOISES \u{30a6}\u{30f3}",
        "fine LOUD NOISES \u{30a6}\u{30f3}",
    ),
    (
        "\u{201c}curly\u{201d} \u{2018}single\u{2019}",
        "\"curly\" 'single'",
        "\"curly\" 'single'",
    ),
    ("\u{1b}[36mblue\u{1b}[0m text", "blue text", "blue text"),
    (
        "line1\u{d}\u{a}line2\u{d}line3\u{2028}x\u{2029}y",
        "line1 line2 line3 x y",
        "line1\u{a}line2\u{a}line3\u{a}x\u{a}y",
    ),
    (
        "P&EACUTE;REZ BUNDESSTRA&SZLIG;E &ntilde; &NTILDE; &nTILDE;",
        "P\u{c9}REZ BUNDESSTRASSE \u{f1} \u{d1} &nTILDE;",
        "P\u{c9}REZ BUNDESSTRASSE \u{f1} \u{d1} &nTILDE;",
    ),
    ("this&not that", "this\u{ac} that", "this&not that"),
    ("&lt;b&gt; bold", "<b> bold", "<b> bold"),
    (
        "<b>&amp;</b> and &eacute;",
        "<b>&</b> and \u{e9}",
        "<b>&amp;</b> and &eacute;",
    ),
    (
        "&#x41;&#65;&#0;&#128;&#x110000;&#1;&#xD800;",
        "AA\u{fffd}\u{20ac}\u{fffd}\u{fffd}",
        "AA\u{fffd}\u{20ac}\u{fffd}\u{fffd}",
    ),
    (
        "\u{c3}\u{192}\u{c2}\u{a9} double",
        "\u{e9} double",
        "\u{e9} double",
    ),
    (
        "\u{f0}\u{178}\u{2dc}\u{20ac} emoji",
        "\u{1f600} emoji",
        "\u{1f600} emoji",
    ),
    (
        "\u{ab}Stra\u{df}e\u{bb}",
        "\u{ab}Stra\u{df}e\u{bb}",
        "\u{ab}Stra\u{df}e\u{bb}",
    ),
    ("e\u{301} combining", "\u{e9} combining", "\u{e9} combining"),
    ("\u{feff}BOM", "BOM", "BOM"),
    (
        "zero\u{200b}width",
        "zero\u{200b}width",
        "zero\u{200b}width",
    ),
    ("nbsp\u{a0}here", "nbsp here", "nbsp\u{a0}here"),
    ("&amp;amp;lt;", "<", "<"),
    (
        "\u{d0}\u{178}\u{d1}\u{20ac}\u{d0}\u{b8}\u{d0}\u{b2}\u{d0}\u{b5}\u{d1}\u{201a}",
        "\u{41f}\u{440}\u{438}\u{432}\u{435}\u{442}",
        "\u{41f}\u{440}\u{438}\u{432}\u{435}\u{442}",
    ),
    (
        "ctrl\u{7}chars\u{7f}\u{b} end",
        "ctrlchars end",
        "ctrlchars end",
    ),
    (
        "c1 \u{93}quoted\u{94} \u{85}",
        "c1 \"quoted\" \u{2026}",
        "c1 \"quoted\" \u{2026}",
    ),
    (
        "&notit; &amp &ampx; &copy2024 &#39;s",
        "\u{ac}it; & &x; \u{a9}2024 's",
        "&notit; &amp &ampx; &copy2024 's",
    ),
    (
        "\u{c2}\u{a0}nbsp mojibake",
        "nbsp mojibake",
        "\u{a0}nbsp mojibake",
    ),
    (
        "caf\u{e9} na\u{ef}ve r\u{e9}sum\u{e9}",
        "caf\u{e9} na\u{ef}ve r\u{e9}sum\u{e9}",
        "caf\u{e9} na\u{ef}ve r\u{e9}sum\u{e9}",
    ),
    (
        "\u{2014} em \u{2013} en \u{2026}",
        "\u{2014} em \u{2013} en \u{2026}",
        "\u{2014} em \u{2013} en \u{2026}",
    ),
    (
        "Bright tones, overexposed, blurred background, static, low quality",
        "Bright tones, overexposed, blurred background, static, low quality",
        "Bright tones, overexposed, blurred background, static, low quality",
    ),
    ("", "", ""),
    ("   ", "", "   "),
    (
        "tab\u{9}sep\u{1c}info\u{1d}",
        "tab sepinfo",
        "tab\u{9}sepinfo",
    ),
    (
        "&Jscr;ohn &HilbertSpace;ancock &checkmark;",
        "\u{1d4a5}ohn \u{210b}ancock \u{2713}",
        "\u{1d4a5}ohn \u{210b}ancock \u{2713}",
    ),
    (
        "x &#128512; y &#x1F600;",
        "x \u{1f600} y \u{1f600}",
        "x \u{1f600} y \u{1f600}",
    ),
];

#[test]
fn prompt_clean_matches_the_pipeline() {
    let mut failures = Vec::new();
    for (input, want, _) in CASES {
        let got = prompt_clean(input);
        if got != *want {
            failures.push(format!("{input:?}: got {got:?}, want {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn fix_text_matches_ftfy() {
    let mut failures = Vec::new();
    for (input, _, want) in CASES {
        let got = fix_text(input);
        if got != *want {
            failures.push(format!("{input:?}: got {got:?}, want {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn html_unescape_follows_python() {
    // Python: html.unescape(x)
    let cases = [
        ("&amp;amp;", "&amp;"),
        ("&gt&lt;&quot", "><\""),
        ("&#x26;&#38;&#X26", "&&&"),
        ("&#9999999999;", "\u{fffd}"),
        ("&#x80;&#x81;&#159;", "\u{20ac}\u{81}\u{178}"),
        ("&#13;&#11;&#xfdd0;&#x1fffe;", "\r"),
        ("&unknown; & &; &#; &#x;", "&unknown; & &; &#; &#x;"),
        ("&AElig &AEligx &Aring;", "\u{c6} \u{c6}x \u{c5}"),
        ("no entities", "no entities"),
    ];
    for (input, want) in cases {
        assert_eq!(html_unescape(input), want, "{input:?}");
    }
}

#[test]
fn whitespace_and_strip() {
    assert_eq!(
        whitespace_clean("\u{3000} a \u{2003}\u{2009} b\u{85}"),
        "a b"
    );
    assert_eq!(basic_clean("  x  "), "x");
    // Not whitespace for Python's `\s`, and kept.
    assert_eq!(prompt_clean("a\u{200b}b"), "a\u{200b}b");
}

#[test]
fn reference_prompts_are_unchanged_by_cleaning() {
    for p in [
        "A person carves a pumpkin on a porch in the evening, smiling.",
        "Bright tones, overexposed, blurred background, static, low quality",
        "image of a face",
        "",
    ] {
        assert_eq!(prompt_clean(p), p);
    }
}
