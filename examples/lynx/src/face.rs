//! The face-model flags `generate` and `embed-face` share.

use clap::Args;
use lynx_pipeline::lynx_arcface::DetectOptions;

#[derive(Debug, Args)]
pub struct FaceFlags {
    /// Units per stage of the IR-SE backbone (e.g. 3,4,14,3). Read from the checkpoint
    /// unless two consecutive stages have the same width.
    #[arg(long, value_delimiter = ',')]
    pub arcface_depths: Option<Vec<usize>>,
    /// Scale photos whose longer side exceeds this many pixels down before detection
    /// (0: detect at the original size).
    #[arg(long, default_value_t = 1280)]
    pub detect_max_side: u32,
    /// Minimum face score of the detector.
    #[arg(long, default_value_t = 0.8)]
    pub detect_threshold: f32,
}

impl FaceFlags {
    /// The detection settings these flags give.
    pub fn detect_options(&self) -> DetectOptions {
        DetectOptions {
            conf_threshold: self.detect_threshold,
            max_side: (self.detect_max_side > 0).then_some(self.detect_max_side),
            ..DetectOptions::default()
        }
    }
}
