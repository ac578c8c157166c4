//! `scheduler/scheduler_config.json` of a diffusers model folder.

use std::path::{Path, PathBuf};

use lynx_core::{Error, Result};
use serde::Deserialize;

/// The fields of diffusers' `UniPCMultistepScheduler` config (defaults as in diffusers
/// 0.33.1). Unknown fields are ignored; what the samplers do not implement is rejected
/// by [`SchedulerConfig::check_unipc`] with the field's name.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    /// `_class_name` (`UniPCMultistepScheduler`).
    #[serde(rename = "_class_name")]
    pub class_name: Option<String>,
    /// Training timesteps (1000): timesteps are `σ · num_train_timesteps`.
    pub num_train_timesteps: usize,
    /// UniPC order (2).
    pub solver_order: usize,
    /// What the model predicts; only `flow_prediction` is implemented.
    pub prediction_type: String,
    /// Dynamic thresholding (must be off).
    pub thresholding: bool,
    /// Whether UniPC works on `x0` predictions (must be on).
    pub predict_x0: bool,
    /// UniPC's `B(h)`: `bh1` or `bh2` (Wan: `bh2`).
    pub solver_type: String,
    /// Lower the order for the last steps (as the reference does).
    pub lower_order_final: bool,
    /// Steps without the UniC corrector.
    pub disable_corrector: Vec<usize>,
    /// An external predictor (must be null).
    pub solver_p: Option<serde_json::Value>,
    /// Karras sigmas (must be off).
    pub use_karras_sigmas: bool,
    /// Exponential sigmas (must be off).
    pub use_exponential_sigmas: bool,
    /// Beta sigmas (must be off).
    pub use_beta_sigmas: bool,
    /// Flow-matching sigmas (must be on).
    pub use_flow_sigmas: bool,
    /// Shift of the flow sigmas (3.0 in the 14B folder).
    pub flow_shift: f64,
    /// Final sigma: `zero` or `sigma_min`.
    pub final_sigmas_type: String,
    /// Explicit betas (must be null).
    pub trained_betas: Option<serde_json::Value>,
    /// The file this was read from, for error messages.
    #[serde(skip)]
    pub path: PathBuf,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            class_name: None,
            num_train_timesteps: 1000,
            solver_order: 2,
            prediction_type: "flow_prediction".into(),
            thresholding: false,
            predict_x0: true,
            solver_type: "bh2".into(),
            lower_order_final: true,
            disable_corrector: Vec::new(),
            solver_p: None,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            use_flow_sigmas: true,
            flow_shift: 1.0,
            final_sigmas_type: "zero".into(),
            trained_betas: None,
            path: PathBuf::from("<default scheduler config>"),
        }
    }
}

impl SchedulerConfig {
    /// Reads `scheduler_config.json` (or the `scheduler/` folder holding it).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let mut path = path.as_ref().to_path_buf();
        if path.is_dir() {
            path = path.join("scheduler_config.json");
        }
        let mut cfg: SchedulerConfig = lynx_core::config::load_json(&path)?;
        cfg.path = path;
        Ok(cfg)
    }

    /// The defaults with `flow_shift` set, as Wan uses them.
    pub fn flow(flow_shift: f64) -> Self {
        Self {
            flow_shift,
            ..Self::default()
        }
    }

    /// Errors naming every option of this file that [`crate::UniPcMultistep`] does
    /// not implement.
    pub fn check_unipc(&self) -> Result<()> {
        let mut bad = Vec::new();
        if !self.use_flow_sigmas {
            bad.push(
                "`use_flow_sigmas` = false (only flow-matching sigmas are implemented)".to_string(),
            );
        }
        if self.prediction_type != "flow_prediction" {
            bad.push(format!(
                "`prediction_type` = {:?} (only \"flow_prediction\")",
                self.prediction_type
            ));
        }
        if !self.predict_x0 {
            bad.push(
                "`predict_x0` = false (flow prediction requires the data-prediction form)".into(),
            );
        }
        if self.thresholding {
            bad.push("`thresholding` = true".into());
        }
        for (flag, name) in [
            (self.use_karras_sigmas, "use_karras_sigmas"),
            (self.use_exponential_sigmas, "use_exponential_sigmas"),
            (self.use_beta_sigmas, "use_beta_sigmas"),
        ] {
            if flag {
                bad.push(format!("`{name}` = true"));
            }
        }
        if self.solver_p.as_ref().is_some_and(|v| !v.is_null()) {
            bad.push("`solver_p` (an external predictor scheduler)".into());
        }
        if !matches!(self.solver_type.as_str(), "bh1" | "bh2") {
            bad.push(format!(
                "`solver_type` = {:?} (bh1 or bh2)",
                self.solver_type
            ));
        }
        if !matches!(self.final_sigmas_type.as_str(), "zero" | "sigma_min") {
            bad.push(format!(
                "`final_sigmas_type` = {:?} (zero or sigma_min)",
                self.final_sigmas_type
            ));
        }
        if self.solver_order == 0 || self.solver_order > 3 {
            bad.push(format!("`solver_order` = {} (1 to 3)", self.solver_order));
        }
        if !(self.flow_shift > 0.0 && self.flow_shift.is_finite()) {
            bad.push(format!(
                "`flow_shift` = {} (must be positive and finite)",
                self.flow_shift
            ));
        }
        if self.num_train_timesteps == 0 {
            bad.push("`num_train_timesteps` = 0".into());
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(Error::config(
                &self.path,
                format!("unsupported scheduler options: {}", bad.join("; ")),
            ))
        }
    }
}
