//! [`Loader`]: what a module's `load` function reads its tensors through.
//!
//! Every layer's loader sits beside its type (`impl WanBlock { fn load(w: &Loader, …) }`)
//! and asks for tensors by the PyTorch attribute names, descending with
//! [`Loader::sub`]. Reads never fail on the spot: a missing or mis-shaped tensor is
//! recorded and a zero placeholder of the requested shape handed back (a broadcast view,
//! so it costs no memory), so that one [`Loader::finish`] — called by
//! [`Checkpoint::build`](crate::Checkpoint::build) — reports every problem of a
//! checkpoint at once, and no caller ever sees a tensor of the wrong shape.
//!
//! A [validating](Loader::validating) loader does all of that without reading: every
//! read is checked and counted ([`Loader::bytes`]) and answered with a placeholder. It
//! sizes a model before loading it ([`Checkpoint::measure`](crate::Checkpoint::measure)),
//! and checks the blocks a model will read later, one at a time ([`crate::LayerStream`]).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

use burn::module::Param;
use burn::tensor::{DType, Device, Distribution, Tensor};
use lynx_core::nn::Linear;
use lynx_core::quant::{DeviceQuant, Encoding};

use lynx_core::nn::{LayerNorm, RmsNorm};
use lynx_core::{Error, Result};

use crate::Checkpoint;

#[derive(Default)]
struct LoadState {
    used: BTreeSet<String>,
    ignored: Vec<String>,
    missing: Vec<String>,
    mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
    errors: Vec<Error>,
    /// Tensors read that the checkpoint's LoRAs change.
    patched: BTreeSet<String>,
    /// Bytes of the tensors read (or, validating, that would have been read).
    bytes: u64,
    /// What a recording checkpoint was asked for, in order.
    records: Vec<crate::TensorRecord>,
}

impl LoadState {
    fn failed(&self) -> bool {
        !(self.missing.is_empty() && self.mismatched.is_empty() && self.errors.is_empty())
    }
}

/// Reads a module's tensors from a [`Checkpoint`] onto a device in a dtype, tracking
/// which keys were used. Obtained from [`Checkpoint::build`](crate::Checkpoint::build).
#[derive(Clone)]
pub struct Loader<'a> {
    ckpt: &'a Checkpoint,
    device: Device,
    dtype: DType,
    prefix: String,
    state: Rc<RefCell<LoadState>>,
    /// Check and count reads without reading.
    validate: bool,
    /// Keep fp8 and GGUF Linear weights in their file's encoding.
    keep_quantized: bool,
}

impl std::fmt::Debug for Loader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("checkpoint", &self.ckpt.path())
            .field("prefix", &self.prefix)
            .field("dtype", &self.dtype)
            .field("validate", &self.validate)
            .finish()
    }
}

impl<'a> Loader<'a> {
    pub(crate) fn new(ckpt: &'a Checkpoint, device: &Device, dtype: DType) -> Self {
        Loader {
            ckpt,
            device: device.clone(),
            dtype,
            prefix: String::new(),
            state: Rc::new(RefCell::new(LoadState::default())),
            validate: false,
            keep_quantized: true,
        }
    }

    /// A loader at the same place, sharing the record, that decodes fp8 and GGUF Linear
    /// weights to the model dtype at load instead of keeping them in their file's
    /// encoding (the default; see [`Loader::linear`]).
    pub fn decoding(&self) -> Loader<'a> {
        Loader {
            keep_quantized: false,
            ..self.clone()
        }
    }

    /// This loader moved to `prefix` (a key prefix without the trailing dot; `""` is
    /// the root).
    pub(crate) fn at(self, prefix: &str) -> Self {
        Loader {
            prefix: prefix.to_string(),
            ..self
        }
    }

    /// A loader at the same place, sharing the record of used and missing keys, whose
    /// reads are checked and counted but not done: each hands back a broadcast view of
    /// zeros of the tensor's shape. For the parts of a model that are read later
    /// (streamed blocks), so that loading still checks every key of the file once.
    pub fn validating(&self) -> Loader<'a> {
        Loader {
            validate: true,
            ..self.clone()
        }
    }

    /// Whether this loader checks and counts without reading.
    pub fn is_validating(&self) -> bool {
        self.validate
    }

    /// Bytes of the tensors read so far through this loader and every loader sharing its
    /// record (its `sub`s, its parent): the device memory of the weights, in the dtypes
    /// they were read in. Validating loaders count what they would have read.
    pub fn bytes(&self) -> u64 {
        self.state.borrow().bytes
    }

    /// The checkpoint behind this loader.
    pub fn checkpoint(&self) -> &'a Checkpoint {
        self.ckpt
    }

    /// The target device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The float dtype weights are converted to.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The full key of `name` under this loader's prefix.
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// A loader for the sub-module `name` (keys `prefix.name.*`).
    pub fn sub(&self, name: impl std::fmt::Display) -> Loader<'a> {
        Loader {
            prefix: self.key(&name.to_string()),
            ..self.clone()
        }
    }

    /// Whether the tensor `name` exists.
    pub fn has(&self, name: &str) -> bool {
        self.ckpt.contains(&self.key(name))
    }

    /// Whether any tensor lives under the sub-module `name`.
    pub fn has_sub(&self, name: &str) -> bool {
        self.ckpt.has_prefix(&format!("{}.", self.key(name)))
    }

    /// The shape of tensor `name` as the file gives it, if present.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.ckpt.shape(&self.key(name)).map(<[usize]>::to_vec)
    }

    /// The shape of tensor `name` if it is present with rank `D`. For sizes that only
    /// the file knows (widths of adapter layers, channel counts); the read that follows
    /// reports a missing or wrong-rank tensor.
    pub fn dims<const D: usize>(&self, name: &str) -> Option<[usize; D]> {
        self.ckpt
            .shape(&self.key(name))
            .and_then(|s| <[usize; D]>::try_from(s).ok())
    }

    /// Marks keys under this loader starting with `name` as deliberately unused
    /// (e.g. BatchNorm's `num_batches_tracked`).
    pub fn ignore(&self, name: &str) {
        let key = self.key(name);
        self.state.borrow_mut().ignored.push(key);
    }

    /// Records an error found while loading (e.g. an inconsistent config); it is
    /// returned by [`Loader::finish`].
    pub fn report(&self, error: Error) {
        self.state.borrow_mut().errors.push(error);
    }

    /// Tensor `name` of exactly `shape` in the model dtype. A missing or mis-shaped
    /// tensor is recorded for [`Loader::finish`] and comes back as zeros of `shape`.
    pub fn tensor<const D: usize>(&self, name: &str, shape: [usize; D]) -> Tensor<D> {
        self.read(name, Some(shape), self.dtype)
    }

    /// [`Loader::tensor`] in f32 whatever the model dtype (norm weights and modulation
    /// tables, which the reference keeps in f32).
    pub fn tensor_f32<const D: usize>(&self, name: &str, shape: [usize; D]) -> Tensor<D> {
        self.read(name, Some(shape), DType::F32)
    }

    /// Tensor `name` of rank `D` with the shape the file gives (a `[1; D]` placeholder
    /// when it is missing or of another rank).
    pub fn tensor_any<const D: usize>(&self, name: &str) -> Tensor<D> {
        self.read(name, None, self.dtype)
    }

    /// [`Loader::tensor`] wrapped as a parameter.
    pub fn param<const D: usize>(&self, name: &str, shape: [usize; D]) -> Param<Tensor<D>> {
        Param::from_tensor(self.tensor(name, shape))
    }

    /// [`Loader::tensor_f32`] wrapped as a parameter.
    pub fn param_f32<const D: usize>(&self, name: &str, shape: [usize; D]) -> Param<Tensor<D>> {
        Param::from_tensor(self.tensor_f32(name, shape))
    }

    /// A `torch.nn.Linear(d_in, d_out, bias)` under this loader (`weight` `[d_out, d_in]`,
    /// `bias` `[d_out]`) as burn's [`Linear`] (weight `[d_in, d_out]`), in the model dtype.
    ///
    /// A weight stored in fp8 (scaled or not) or a GGUF block type stays in that encoding
    /// ([`Linear::quantized`]) and is decoded when used, unless the loader is
    /// [decoding](Loader::decoding); it is counted at its encoded size. A LoRA set on the
    /// checkpoint is not fused into such a weight: the load fails naming it (apply the
    /// LoRA on the fly instead).
    pub fn linear(&self, d_in: usize, d_out: usize, bias: bool) -> Linear {
        self.linear_in(d_in, d_out, bias, self.dtype)
    }

    /// [`Loader::linear`] kept in f32 whatever the model dtype.
    pub fn linear_f32(&self, d_in: usize, d_out: usize, bias: bool) -> Linear {
        self.linear_in(d_in, d_out, bias, DType::F32)
    }

    fn linear_in(&self, d_in: usize, d_out: usize, bias: bool, dtype: DType) -> Linear {
        if let Some(layer) = self.linear_quantized(d_in, d_out, bias, dtype) {
            return layer;
        }
        let weight = self.read::<2>("weight", Some([d_out, d_in]), dtype);
        let bias = bias.then(|| self.read("bias", Some([d_out]), dtype));
        Linear::new(self.transposed(weight), bias)
    }

    /// The Linear under this loader with its weight kept encoded, when it is stored so
    /// and found with the right shape (otherwise `None`: the plain path reads and reports).
    fn linear_quantized(
        &self,
        d_in: usize,
        d_out: usize,
        bias: bool,
        dtype: DType,
    ) -> Option<Linear> {
        let key = self.key("weight");
        let enc = self.ckpt.encoding(&key)?;
        if !self.keep_quantized || enc.is_plain_float() || self.ckpt.synthetic_std().is_some() {
            return None;
        }
        if self.ckpt.shape(&key)? != [d_out, d_in] || enc.row_bytes(d_in).is_none() {
            return None;
        }
        if self.ckpt.loras().is_some_and(|l| l.changes(&key)) {
            // Fusing would decode the whole layer for good: refused, never dropped.
            let file = self.ckpt.file_of(&key).unwrap_or(self.ckpt.path());
            self.state.borrow_mut().errors.push(Error::input(format!(
                "a LoRA changes `{key}`, which {} stores as {} and the model keeps so: a LoRA \
                 is not fused into quantized weights; apply it on the fly (lynx_dit::DitLora; \
                 the pipeline does so by itself), or decode the weights at load \
                 (Loader::decoding)",
                file.display(),
                enc.name()
            )));
            self.state.borrow_mut().patched.insert(key);
            return None;
        }
        if self.validate || self.state.borrow().failed() {
            // Counted at the encoded size; the stand-in costs nothing.
            let stored = self.ckpt.stored_bytes(&key).unwrap_or(0);
            let kept = self.kept_bytes(enc, d_in * d_out, stored);
            let mut state = self.state.borrow_mut();
            state.used.insert(key);
            state.bytes += kept;
            drop(state);
            let bias = bias.then(|| self.read("bias", Some([d_out]), dtype));
            let w = Tensor::<2>::zeros([1, 1], (&self.device, dtype)).expand([d_in, d_out]);
            return Some(Linear::new(w, bias));
        }
        let q = match self.ckpt.quantized(&key) {
            Ok(Some(q)) => q,
            Ok(None) => return None,
            Err(e) => {
                self.state.borrow_mut().errors.push(e);
                return None;
            }
        };
        {
            let mut state = self.state.borrow_mut();
            state.used.insert(key);
            state.bytes += self.kept_bytes(enc, d_in * d_out, q.byte_len() as u64);
        }
        let bias = bias.then(|| self.read("bias", Some([d_out]), dtype));
        Some(Linear::quantized(q, bias, &self.device, dtype))
    }

    /// Bytes a weight kept in `enc` holds on this loader's device: the file's `stored`
    /// bytes on the CPU, the re-laid form's on a GPU ([`DeviceQuant`]).
    fn kept_bytes(&self, enc: Encoding, numel: usize, stored: u64) -> u64 {
        if lynx_core::device::is_cpu(&self.device) {
            return stored;
        }
        DeviceQuant::byte_len_of(enc, numel).map_or(stored, |b| b as u64)
    }

    /// A `torch.nn.RMSNorm(dim)` (or T5's layer norm) under this loader: `weight` `[dim]`,
    /// kept in f32.
    pub fn rms_norm(&self, dim: usize, eps: f64) -> RmsNorm {
        RmsNorm::new(self.param_f32("weight", [dim]), eps)
    }

    /// A `torch.nn.LayerNorm(dim)` with its affine part under this loader: `weight` and
    /// `bias` `[dim]`, kept in f32.
    pub fn layer_norm(&self, dim: usize, eps: f64) -> LayerNorm {
        LayerNorm::new(
            self.param_f32("weight", [dim]),
            self.param_f32("bias", [dim]),
            eps,
        )
    }

    /// `wᵀ` laid out for products ([`lynx_core::nn::transposed`]) when `w` holds read
    /// weights; a view when it is a placeholder (validation, or a failed load), which must
    /// stay as small as it is.
    pub fn transposed(&self, w: Tensor<2>) -> Tensor<2> {
        if self.validate || self.state.borrow().failed() {
            w.transpose()
        } else {
            lynx_core::nn::transposed(w)
        }
    }

    fn read<const D: usize>(
        &self,
        name: &str,
        shape: Option<[usize; D]>,
        dtype: DType,
    ) -> Tensor<D> {
        let key = self.key(name);
        // A broadcast view: no memory however large the shape.
        let zeros = |s: Option<[usize; D]>| {
            let zeros = Tensor::<D>::zeros([1; D], (&self.device, dtype));
            match s {
                Some(s) => zeros.expand(s),
                None => zeros,
            }
        };
        let count = |s: &[usize]| {
            let n: usize = s.iter().product();
            self.state.borrow_mut().bytes += (n * dtype.size()) as u64;
        };
        if self.ckpt.is_recording() {
            let shape = self.record(key, shape, dtype);
            return zeros(shape);
        }
        let loras = self.ckpt.loras().filter(|l| l.changes(&key));
        if loras.is_some() {
            self.state.borrow_mut().patched.insert(key.clone());
        }
        if let (Some(std), Some(shape)) = (self.ckpt.synthetic_std(), shape) {
            count(&shape);
            if let Some(Err(e)) = loras.map(|l| l.check_shape(&key, &shape)) {
                self.state.borrow_mut().errors.push(e);
            }
            if self.validate {
                return zeros(Some(shape));
            }
            let dist = Distribution::Normal(0.0, std);
            let t = Tensor::<D>::random(shape, dist, &self.device);
            return self
                .fuse(&key, t, shape, dtype)
                .unwrap_or_else(|| zeros(Some(shape)));
        }
        let Some(found) = self.ckpt.shape(&key).map(<[usize]>::to_vec) else {
            self.state.borrow_mut().missing.push(key);
            return zeros(shape);
        };
        self.state.borrow_mut().used.insert(key.clone());
        let rank_ok = found.len() == D;
        if !rank_ok || shape.is_some_and(|s| s.as_slice() != found.as_slice()) {
            let expected = shape.map(|s| s.to_vec()).unwrap_or_else(|| vec![0; D]);
            self.state
                .borrow_mut()
                .mismatched
                .push((key, expected, found));
            return zeros(shape);
        }
        count(&found);
        if let Some(Err(e)) = loras.map(|l| l.check_shape(&key, &found)) {
            self.state.borrow_mut().errors.push(e);
            return zeros(shape);
        }
        if self.validate {
            return zeros(<[usize; D]>::try_from(found).ok());
        }
        if self.state.borrow().failed() {
            // The module will be dropped: spare the reading and the memory.
            return zeros(shape);
        }
        // A tensor a LoRA changes is read in f32, the delta added, then converted.
        let read_dtype = if loras.is_some() { DType::F32 } else { dtype };
        let read = self.ckpt.tensor::<D>(&key, &self.device, read_dtype);
        match read {
            Ok(t) if loras.is_some() => {
                let dims = t.dims();
                self.fuse(&key, t, dims, dtype)
                    .unwrap_or_else(|| zeros(shape))
            }
            Ok(t) => t,
            Err(e) => {
                self.state.borrow_mut().errors.push(e);
                zeros(shape)
            }
        }
    }

    /// `t` (f32) plus the checkpoint's LoRA delta for `key`, in `dtype`; `None` (the
    /// error recorded) when the delta cannot be made.
    fn fuse<const D: usize>(
        &self,
        key: &str,
        t: Tensor<D>,
        shape: [usize; D],
        dtype: DType,
    ) -> Option<Tensor<D>> {
        let Some(loras) = self.ckpt.loras() else {
            return Some(t.cast(dtype));
        };
        match loras.delta(key, shape, &self.device) {
            Ok(Some(delta)) => Some((t.cast(DType::F32) + delta).cast(dtype)),
            Ok(None) => Some(t.cast(dtype)),
            Err(e) => {
                self.state.borrow_mut().errors.push(e);
                None
            }
        }
    }

    /// Records a read of a recording checkpoint: checks it against a declared shape and
    /// against an earlier read of the same key, and returns the shape to hand out
    /// (`None`: a rank-only read of an undeclared tensor, reported missing).
    fn record<const D: usize>(
        &self,
        key: String,
        shape: Option<[usize; D]>,
        dtype: DType,
    ) -> Option<[usize; D]> {
        let mut state = self.state.borrow_mut();
        let declared = self.ckpt.shape(&key).map(<[usize]>::to_vec);
        let asked = shape.map(|s| s.to_vec());
        let found = match (declared, asked) {
            (Some(d), Some(a)) if d != a => {
                state.mismatched.push((key, a, d));
                return shape;
            }
            (Some(d), _) if d.len() != D => {
                state.mismatched.push((key, vec![0; D], d));
                return shape;
            }
            (Some(d), _) | (None, Some(d)) => d,
            (None, None) => {
                state.missing.push(key);
                return None;
            }
        };
        let out = <[usize; D]>::try_from(found.as_slice()).ok();
        let first = state
            .records
            .iter()
            .find(|r| r.key == key)
            .map(|r| (r.shape.clone(), r.dtype));
        match first {
            Some((s, d)) if s != found || d != dtype => {
                state.errors.push(Error::input(format!(
                    "`{key}` is read as {s:?} in {d:?} and again as {found:?} in {dtype:?}"
                )));
            }
            Some(_) => {}
            None => {
                state.bytes += found.iter().product::<usize>() as u64 * dtype.size() as u64;
                state.used.insert(key.clone());
                state.records.push(crate::TensorRecord {
                    key,
                    shape: found,
                    dtype,
                });
            }
        }
        out
    }

    /// The tensors recorded so far (see [`crate::record`]), leaving none behind.
    pub(crate) fn take_records(&self) -> Vec<crate::TensorRecord> {
        std::mem::take(&mut self.state.borrow_mut().records)
    }

    /// Checks that every requested tensor was found with the right shape, and that
    /// every tensor under this loader's prefix was used (or ignored). The first error
    /// given to [`Loader::report`] (or met reading a tensor) comes first; otherwise one
    /// [`Error::Keys`] lists every missing, unused and mis-shaped key.
    pub fn finish(self) -> Result<()> {
        let mut state = self.state.borrow_mut();
        if let Some(e) = state.errors.drain(..).next() {
            return Err(e);
        }
        let root = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}.", self.prefix)
        };
        if let Some(loras) = self.ckpt.loras() {
            loras.unread(&root, |t| state.patched.contains(t))?;
        }
        let unexpected: Vec<String> = self
            .ckpt
            .keys()
            .filter(|k| k.starts_with(&root))
            .filter(|k| !state.used.contains(*k))
            .filter(|k| !state.ignored.iter().any(|i| k.starts_with(i.as_str())))
            .map(str::to_string)
            .collect();
        if state.missing.is_empty() && unexpected.is_empty() && state.mismatched.is_empty() {
            return Ok(());
        }
        Err(Error::Keys {
            path: self.ckpt.path().to_path_buf(),
            missing: std::mem::take(&mut state.missing),
            unexpected,
            mismatched: std::mem::take(&mut state.mismatched),
        })
    }
}
