//! Classifier-free guidance, plain and Lynx's two-scale form.

use burn::tensor::Tensor;

/// How the model's per-step predictions are combined.
///
/// - [`Guidance::Cfg`]: two passes, `u + g·(c − u)` with `c` = (prompt, subject) and
///   `u` = (negative prompt, no subject).
/// - [`Guidance::Lynx`]: three passes, `u + g_i·(i − u) + g·(c − i)`, where `i` =
///   (negative prompt, subject) isolates the identity direction (Lynx's
///   `guidance_scale_i`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Guidance {
    /// Plain classifier-free guidance.
    Cfg {
        /// Text guidance `g`.
        scale: f64,
    },
    /// Lynx's text + identity guidance.
    Lynx {
        /// Text guidance `g`.
        scale: f64,
        /// Identity guidance `g_i`.
        identity_scale: f64,
    },
}

impl Guidance {
    /// Plain CFG when `identity_scale` is `None`, Lynx's three-way guidance otherwise.
    pub fn new(scale: f64, identity_scale: Option<f64>) -> Self {
        match identity_scale {
            None => Guidance::Cfg { scale },
            Some(identity_scale) => Guidance::Lynx {
                scale,
                identity_scale,
            },
        }
    }

    /// Number of model passes per step.
    pub fn passes(&self) -> usize {
        match self {
            Guidance::Cfg { .. } => 2,
            Guidance::Lynx { .. } => 3,
        }
    }

    /// Combines the predictions. `identity` is used only by [`Guidance::Lynx`]; pass
    /// `None` for [`Guidance::Cfg`].
    ///
    /// # Shapes
    /// - all inputs and the output: the same shape.
    pub fn combine<const D: usize>(
        &self,
        cond: Tensor<D>,
        uncond: Tensor<D>,
        identity: Option<Tensor<D>>,
    ) -> Tensor<D> {
        match (*self, identity) {
            (Guidance::Cfg { scale }, _) => cfg(cond, uncond, scale),
            (
                Guidance::Lynx {
                    scale,
                    identity_scale,
                },
                Some(i),
            ) => uncond.clone() + (i.clone() - uncond) * identity_scale + (cond - i) * scale,
            (Guidance::Lynx { scale, .. }, None) => cfg(cond, uncond, scale),
        }
    }
}

/// `u + g·(c − u)`.
///
/// # Shapes
/// - all inputs and the output: the same shape.
pub fn cfg<const D: usize>(cond: Tensor<D>, uncond: Tensor<D>, scale: f64) -> Tensor<D> {
    uncond.clone() + (cond - uncond) * scale
}
