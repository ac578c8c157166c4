//! Offloading: how much of a model stays on the device between uses, and
//! [`LayerStream`], the blocks of a model read from its memory-mapped checkpoint one at
//! a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::tensor::{DType, Device};

use lynx_core::{Error, Result};

use crate::{Checkpoint, Loader};

/// Where a model's weights live between uses (`--offload none|model|blocks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Offload {
    /// Every component is loaded onto the device once and stays there.
    #[default]
    None,
    /// Each component (text encoder, DiT, VAE, adapters, face models) is loaded onto the
    /// device when it runs and dropped afterwards; the checkpoints stay memory-mapped.
    Model,
    /// As [`Offload::Model`], and the repeated blocks of the big components (the DiT's
    /// transformer blocks, the text encoder's layers, the adapters' per-block layers)
    /// are read from the checkpoint one at a time during each pass ([`LayerStream`]).
    Blocks,
}

impl Offload {
    /// Parses `none`, `model` or `blocks`.
    pub fn parse(name: &str) -> Result<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(Self::None),
            "model" => Ok(Self::Model),
            "blocks" => Ok(Self::Blocks),
            other => Err(Error::input(format!(
                "unknown offload `{other}`; use none, model or blocks"
            ))),
        }
    }

    /// The name `--offload` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Model => "model",
            Self::Blocks => "blocks",
        }
    }

    /// Whether components are loaded only while they run.
    pub fn on_demand(self) -> bool {
        self != Self::None
    }

    /// Whether blocks are streamed.
    pub fn streams_blocks(self) -> bool {
        self == Self::Blocks
    }
}

type LoadFn<M> = dyn Fn(&Loader<'_>) -> M + Send + Sync;

/// Layers a [`LayerStream::for_each`] has read ahead of its current one: the layer in use
/// plus this many are on the device at once.
pub const READ_AHEAD: usize = 1;

/// Layers read by [`LayerStream::for_each`] in this process and not dropped yet; the
/// most there were at once; and how many were read in all.
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static READS: AtomicUsize = AtomicUsize::new(0);

/// What the layer streams of this process have held, since the last
/// [`StreamStats::reset`] (for tests and diagnostics: every stream counts here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamStats {
    /// Layers read and not dropped yet.
    pub live: usize,
    /// The most layers that were on the device at once.
    pub peak: usize,
    /// Layers read in all.
    pub reads: usize,
}

impl StreamStats {
    /// The counts now.
    pub fn now() -> Self {
        Self {
            live: LIVE.load(Ordering::SeqCst),
            peak: PEAK.load(Ordering::SeqCst),
            reads: READS.load(Ordering::SeqCst),
        }
    }

    /// Starts the peak and the read count afresh (the peak from the layers live now).
    pub fn reset() {
        READS.store(0, Ordering::SeqCst);
        PEAK.store(LIVE.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

/// A layer read by a stream, counted in [`StreamStats`] until it is dropped.
struct Counted<M>(M);

impl<M> Counted<M> {
    fn new(layer: M) -> Self {
        let live = LIVE.fetch_add(1, Ordering::SeqCst) + 1;
        PEAK.fetch_max(live, Ordering::SeqCst);
        READS.fetch_add(1, Ordering::SeqCst);
        Self(layer)
    }
}

impl<M> Drop for Counted<M> {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A stack of same-shaped layers (`prefix.0`, `prefix.1`, …) that stays in its
/// memory-mapped checkpoint: [`LayerStream::for_each`] reads each layer onto the device
/// (converting the dtype as it reads), hands it to the caller and drops it before the
/// layer after next is read. With prefetching on, a second thread reads layer `i + 1`
/// while the caller computes with layer `i`, so at most two layers are on the device.
///
/// Reading releases the file's pages from the process as it copies (see
/// [`Checkpoint::read_as`]): on the CPU the process holds the one or two layers in use,
/// not the file.
///
/// The keys and shapes of every layer are checked once, when the model is loaded (with a
/// [validating](Loader::validating) loader); each read checks its layer again.
pub struct LayerStream<M> {
    ckpt: Arc<Checkpoint>,
    prefixes: Vec<String>,
    device: Device,
    dtype: DType,
    load: Arc<LoadFn<M>>,
    prefetch: bool,
}

impl<M> Clone for LayerStream<M> {
    fn clone(&self) -> Self {
        Self {
            ckpt: self.ckpt.clone(),
            prefixes: self.prefixes.clone(),
            device: self.device.clone(),
            dtype: self.dtype,
            load: self.load.clone(),
            prefetch: self.prefetch,
        }
    }
}

impl<M> std::fmt::Debug for LayerStream<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerStream")
            .field("checkpoint", &self.ckpt.path())
            .field("layers", &self.prefixes.len())
            .field("first", &self.prefixes.first())
            .field("dtype", &self.dtype)
            .field("prefetch", &self.prefetch)
            .finish()
    }
}

impl<M: Send> LayerStream<M> {
    /// Layers `prefixes[i]` of `ckpt`, each built by `load` (the layer's loader, given a
    /// [`Loader`] at its prefix) on `device` in `dtype`. Prefetching is on.
    pub fn new(
        ckpt: Arc<Checkpoint>,
        prefixes: Vec<String>,
        device: &Device,
        dtype: DType,
        load: impl Fn(&Loader<'_>) -> M + Send + Sync + 'static,
    ) -> Self {
        Self {
            ckpt,
            prefixes,
            device: device.clone(),
            dtype,
            load: Arc::new(load),
            prefetch: true,
        }
    }

    /// Turns reading the next layer on a second thread on or off.
    pub fn with_prefetch(mut self, prefetch: bool) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.prefixes.len()
    }

    /// Whether there is no layer.
    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// The checkpoint the layers are read from.
    pub fn checkpoint(&self) -> &Arc<Checkpoint> {
        &self.ckpt
    }

    /// Reads layer `i` onto the device.
    pub fn load(&self, i: usize) -> Result<M> {
        let prefix = self.prefixes.get(i).ok_or_else(|| {
            Error::input(format!(
                "layer {i} asked for; the stream has {}",
                self.prefixes.len()
            ))
        })?;
        self.ckpt
            .build_at(prefix, &self.device, self.dtype, |w| Ok((self.load)(w)))
    }

    /// Layer `i`, counted in [`StreamStats`] while it lives.
    fn load_counted(&self, i: usize) -> Result<Counted<M>> {
        self.load(i).map(Counted::new)
    }

    /// Calls `f(i, layer)` for every layer in order, each read just before its turn
    /// (during the previous layer's turn when prefetching: [`READ_AHEAD`] layers ahead)
    /// and dropped right after it. Stops at the first error, of a read or of `f`.
    pub fn for_each(&self, mut f: impl FnMut(usize, &M) -> Result<()>) -> Result<()> {
        let n = self.len();
        if !self.prefetch || n < 2 {
            for i in 0..n {
                let layer = self.load_counted(i)?;
                f(i, &layer.0)?;
            }
            return Ok(());
        }
        std::thread::scope(|scope| {
            let spawn = |i: usize| {
                std::thread::Builder::new()
                    .name(format!("lynx-prefetch-{i}"))
                    .spawn_scoped(scope, move || self.load_counted(i))
                    .map_err(|e| Error::input(format!("cannot start a prefetch thread: {e}")))
            };
            let mut pending = Some(spawn(0)?);
            let mut i = 0;
            while let Some(handle) = pending.take() {
                let layer = handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
                if i + 1 < n {
                    pending = Some(spawn(i + 1)?);
                }
                let result = f(i, &layer.0);
                drop(layer);
                if let Err(e) = result {
                    // Let the pending read finish (it may hold the device) and drop it.
                    if let Some(h) = pending.take() {
                        let _ = h.join();
                    }
                    return Err(e);
                }
                i += 1;
            }
            Ok(())
        })
    }
}

/// Calls `f(i, layer)` for every layer of a model's stack: the `resident` ones in order,
/// or, when the stack is streamed (`stream` given), each read in its turn
/// ([`LayerStream::for_each`]). Stops at the first error.
pub fn for_each_layer<M: Send>(
    resident: &[M],
    stream: Option<&LayerStream<M>>,
    mut f: impl FnMut(usize, &M) -> Result<()>,
) -> Result<()> {
    match stream {
        Some(stream) => stream.for_each(f),
        None => resident.iter().enumerate().try_for_each(|(i, m)| f(i, m)),
    }
}
