//! Prompt cleaning as the Wan pipeline does it (diffusers 0.33.1
//! `pipelines/wan/pipeline_wan.py`: `basic_clean`, `whitespace_clean`, `prompt_clean`).
//!
//! Cleaning is the caller's choice: the Wan pipeline cleans the user's prompt and the
//! negative prompt, while Lynx encodes its reference prompt `"image of a face"` raw.

mod ftfy;
mod html;

pub use ftfy::fix_text;
pub use html::{unescape as html_unescape, unescape_strict as html_unescape_strict};

/// The Wan pipeline's `prompt_clean`: [`basic_clean`] then [`whitespace_clean`].
pub fn prompt_clean(text: &str) -> String {
    whitespace_clean(&basic_clean(text))
}

/// ftfy-style fixes ([`fix_text`]), HTML unescaping twice, then trimming.
pub fn basic_clean(text: &str) -> String {
    let text = fix_text(text);
    let text = html_unescape(&html_unescape(&text));
    py_strip(&text).to_string()
}

/// Collapses every run of Unicode whitespace to one space and trims the ends.
pub fn whitespace_clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            in_space = true;
        } else {
            if in_space && !out.is_empty() {
                out.push(' ');
            }
            in_space = false;
            out.push(c);
        }
    }
    py_strip(&out).to_string()
}

/// Python's `str.strip()`: Unicode whitespace plus the information separators
/// `U+001C..=U+001F`.
fn py_strip(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}
