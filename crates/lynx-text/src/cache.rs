//! Prompt embeddings remembered per (prompt, cleaning), so that the negative prompt and
//! Lynx's reference prompt are encoded once per process, not once per video.

use std::collections::HashMap;
use std::sync::Mutex;

use burn::tensor::Tensor;
use lynx_core::Result;

/// A map from `(prompt, cleaned)` to its `[1, seq, d_model]` embedding.
///
/// Tensors are reference-counted handles, so a hit costs no copy. Thread-safe.
#[derive(Debug, Default)]
pub struct EmbeddingCache {
    map: Mutex<HashMap<(String, bool), Tensor<3>>>,
}

impl EmbeddingCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The cached embedding of `prompt`, if any.
    pub fn get(&self, prompt: &str, clean: bool) -> Option<Tensor<3>> {
        self.lock().get(&(prompt.to_string(), clean)).cloned()
    }

    /// The cached embedding, or the result of `encode` (stored when it succeeds).
    /// `encode` runs without the lock held.
    pub fn get_or_try_insert(
        &self,
        prompt: &str,
        clean: bool,
        encode: impl FnOnce() -> Result<Tensor<3>>,
    ) -> Result<Tensor<3>> {
        if let Some(t) = self.get(prompt, clean) {
            return Ok(t);
        }
        let t = encode()?;
        let mut map = self.lock();
        Ok(map.entry((prompt.to_string(), clean)).or_insert(t).clone())
    }

    /// Number of cached embeddings.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every embedding.
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, bool), Tensor<3>>> {
        // A panic while holding the lock leaves the map itself consistent.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}
