//! What the restricted unpickler builds: values, the arenas holding containers, and the
//! torch objects (storages named by persistent ids, tensors rebuilt from them), plus the
//! allow-list of globals, after `torch/_weights_only_unpickler.py`'s idea of what a
//! weights-only load may touch.

use crate::pth::PthDtype;
use crate::pth::chunked::Chunked;

/// Index of an object in one of the [`Heap`] arenas.
pub(crate) type Id = u32;

/// A pickled value. Containers and strings point into a [`Heap`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits in `i64`.
    Int(i64),
    /// A larger integer: its little-endian two's complement bytes in [`Heap::blobs`].
    BigInt(Id),
    /// A float.
    Float(f64),
    /// A text string in [`Heap::strs`].
    Str(Id),
    /// A byte string in [`Heap::blobs`].
    Bytes(Id),
    /// A tuple in [`Heap::seqs`].
    Tuple(Id),
    /// A list in [`Heap::seqs`].
    List(Id),
    /// A dict (or `OrderedDict`) in [`Heap::dicts`].
    Dict(Id),
    /// An allowed global.
    Global(Global),
    /// A storage named by a persistent id, in [`Heap::storages`].
    Storage(Id),
    /// A tensor rebuilt from a storage, in [`Heap::tensors`].
    Tensor(Id),
}

impl Value {
    /// The Python type, with an article, for messages (`an int`, `a dict`).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "a bool",
            Value::Int(_) | Value::BigInt(_) => "an int",
            Value::Float(_) => "a float",
            Value::Str(_) => "a str",
            Value::Bytes(_) => "a bytes object",
            Value::Tuple(_) => "a tuple",
            Value::List(_) => "a list",
            Value::Dict(_) => "a dict",
            Value::Global(_) => "a global",
            Value::Storage(_) => "a storage",
            Value::Tensor(_) => "a tensor",
        }
    }
}

/// The only globals a state dict may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Global {
    /// `collections.OrderedDict`.
    OrderedDict,
    /// `torch._utils._rebuild_tensor_v2`.
    RebuildTensorV2,
    /// `torch._utils._rebuild_tensor` (torch 0.4).
    RebuildTensor,
    /// `torch._utils._rebuild_parameter`.
    RebuildParameter,
    /// `torch._utils._rebuild_parameter_with_state`.
    RebuildParameterWithState,
    /// A storage class (`torch.FloatStorage`, …; `torch.UntypedStorage` holds bytes).
    Storage(PthDtype),
    /// A dtype (`torch.float32`, …), which newer persistent ids may use as storage type.
    Dtype(PthDtype),
}

impl Global {
    /// How messages name it.
    pub(super) fn name(self) -> String {
        match self {
            Global::OrderedDict => "`collections.OrderedDict`".into(),
            Global::RebuildTensorV2 => "`torch._utils._rebuild_tensor_v2`".into(),
            Global::RebuildTensor => "`torch._utils._rebuild_tensor`".into(),
            Global::RebuildParameter => "`torch._utils._rebuild_parameter`".into(),
            Global::RebuildParameterWithState => {
                "`torch._utils._rebuild_parameter_with_state`".into()
            }
            Global::Storage(d) => format!("the {} storage class", d.name()),
            Global::Dtype(d) => format!("the dtype {}", d.name()),
        }
    }
}

/// Resolves `module.name` against the allow-list.
pub(super) fn resolve_global(module: &str, name: &str) -> Option<Global> {
    let storage = |name: &str| {
        Some(match name {
            "DoubleStorage" => PthDtype::F64,
            "FloatStorage" => PthDtype::F32,
            "HalfStorage" => PthDtype::F16,
            "BFloat16Storage" => PthDtype::BF16,
            "LongStorage" => PthDtype::I64,
            "IntStorage" => PthDtype::I32,
            "ShortStorage" => PthDtype::I16,
            "CharStorage" => PthDtype::I8,
            "ByteStorage" | "UntypedStorage" => PthDtype::U8,
            "BoolStorage" => PthDtype::Bool,
            _ => return None,
        })
    };
    let dtype = |name: &str| {
        Some(match name {
            "float64" | "double" => PthDtype::F64,
            "float32" | "float" => PthDtype::F32,
            "float16" | "half" => PthDtype::F16,
            "bfloat16" => PthDtype::BF16,
            "int64" | "long" => PthDtype::I64,
            "int32" | "int" => PthDtype::I32,
            "int16" | "short" => PthDtype::I16,
            "int8" => PthDtype::I8,
            "uint8" => PthDtype::U8,
            "bool" => PthDtype::Bool,
            _ => return None,
        })
    };
    match (module, name) {
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensorV2),
        ("torch._utils", "_rebuild_tensor") => Some(Global::RebuildTensor),
        ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
        ("torch._utils", "_rebuild_parameter_with_state") => {
            Some(Global::RebuildParameterWithState)
        }
        ("torch.storage", "UntypedStorage") => Some(Global::Storage(PthDtype::U8)),
        ("torch", name) => storage(name)
            .map(Global::Storage)
            .or_else(|| dtype(name).map(Global::Dtype)),
        _ => None,
    }
}

/// Which persistent-id tuples are accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PidForm {
    /// None: the pickle must not reference storages.
    Forbidden,
    /// `('storage', type, key, location, numel)` (zip archives).
    Zip,
    /// `('storage', type, root_key, location, numel, view_or_None)` (legacy files).
    Legacy,
}

/// A storage named by a persistent id.
#[derive(Clone, Debug)]
pub(crate) struct StorageRef {
    /// Element type.
    pub dtype: PthDtype,
    /// Storage key (zip: `data/<key>`; legacy: the root key).
    pub key: String,
    /// Elements in the (root) storage.
    pub numel: u64,
    /// Legacy view into the root storage, if any.
    pub view: Option<View>,
}

/// A legacy storage view `(view_key, offset, size)`, in elements of the root storage.
#[derive(Clone, Debug)]
pub(crate) struct View {
    /// Key of the view (for messages).
    pub key: String,
    /// Offset into the root storage, in elements.
    pub offset: u64,
    /// Elements in the view.
    pub numel: u64,
}

/// A tensor as `_rebuild_tensor_v2` describes it.
#[derive(Clone, Debug)]
pub(crate) struct TensorRef {
    /// Its storage, in [`Heap::storages`].
    pub storage: Id,
    /// Storage offset, in elements.
    pub offset: u64,
    /// Sizes.
    pub shape: Vec<u64>,
    /// Strides, in elements.
    pub stride: Vec<u64>,
}

/// The arenas that hold what a pickle built.
#[derive(Default, Debug)]
pub(crate) struct Heap {
    /// Text strings.
    pub strs: Chunked<String>,
    /// Byte strings and big integers.
    pub blobs: Chunked<Vec<u8>>,
    /// Tuples and lists.
    pub seqs: Chunked<Chunked<Value>>,
    /// Dicts, in insertion order (a repeated key is kept twice; see `tensors` in the
    /// parent module).
    pub dicts: Chunked<Chunked<(Value, Value)>>,
    /// Storages.
    pub storages: Chunked<StorageRef>,
    /// Tensors.
    pub tensors: Chunked<TensorRef>,
}

/// Why a pickle could not be read.
#[derive(Debug)]
pub(crate) enum PickleError {
    /// The data ended inside an opcode at byte `pos` (or before `STOP`).
    Truncated {
        /// Offset of the opcode that ran out of data.
        pos: usize,
    },
    /// Anything else, at the opcode starting at byte `pos`.
    Bad {
        /// Offset of the offending opcode.
        pos: usize,
        /// What is wrong.
        msg: String,
    },
}

/// What one pickle yielded.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// The unpickled object.
    pub root: Value,
    /// What it refers to.
    pub heap: Heap,
    /// Offset just past its `STOP` opcode.
    pub end: usize,
}
