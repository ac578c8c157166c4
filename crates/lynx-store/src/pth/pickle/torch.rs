//! The torch-specific semantics of the unpickler: resolving `GLOBAL`s against the
//! allow-list, evaluating `REDUCE` for the few allowed callables the way
//! `torch/_utils.py` defines them (`_rebuild_tensor_v2`, `_rebuild_parameter`, …,
//! `collections.OrderedDict`), and turning persistent ids into storages as
//! `persistent_load` in `torch/serialization.py` does (`_load` for zip archives,
//! `_legacy_load` for the older stream, with its optional storage view).

use super::objects::{View, resolve_global};
use super::{Chunked, Global, Machine, PickleError, PidForm, StorageRef, TensorRef, Value};

/// Most dimensions a tensor may have (no real checkpoint comes close).
const MAX_DIMS: usize = 64;

impl Machine<'_> {
    /// The allowed global `module.name`, or an error naming it.
    pub(super) fn global(&self, module: &[u8], name: &[u8]) -> Result<Value, PickleError> {
        let module = String::from_utf8_lossy(module);
        let name = String::from_utf8_lossy(name);
        let (module, name) = (module.trim(), name.trim());
        if let Some(g) = resolve_global(module, name) {
            return Ok(Value::Global(g));
        }
        let full = format!("{}.{}", module.escape_debug(), name.escape_debug());
        // Tensors of the dtypes torch added later (uint16/32/64, float8, …) are pickled
        // with `_rebuild_tensor_v3`; complex and quantized ones name their own storages.
        /// Name prefixes of torch dtypes and storages this reader does not support.
        const OTHER_DTYPES: [&str; 14] = [
            "uint", "qint", "quint", "float8", "float4", "complex", "bits", "int1", "int2", "int3",
            "int4", "int5", "int6", "int7",
        ];
        let unsupported_dtype = (module == "torch"
            && (name.ends_with("Storage") || OTHER_DTYPES.iter().any(|p| name.starts_with(p))))
            || (module == "torch._utils" && name == "_rebuild_tensor_v3");
        Err(self.bad(if unsupported_dtype {
            format!(
                "global `{full}` belongs to a tensor dtype that is not supported (only f64, \
                 f32, f16, bf16, i64, i32, i16, i8, u8 and bool are)"
            )
        } else {
            format!("global `{full}` is not allowed in a state dict")
        }))
    }

    /// The items of a tuple (at most [`MAX_STACK`](super::MAX_STACK), as tuples are built
    /// on the stack), or an
    /// error naming `what`.
    fn tuple(&self, v: Value, what: &str) -> Result<Vec<Value>, PickleError> {
        match v {
            Value::Tuple(id) => Ok(self.heap.seqs[id as usize].iter().copied().collect()),
            other => Err(self.bad(format!("{what} is {}, not a tuple", other.kind()))),
        }
    }

    /// `v` as a non-negative integer.
    fn uint(&self, v: Value, what: &str) -> Result<u64, PickleError> {
        match v {
            Value::Int(i) if i >= 0 => Ok(i as u64),
            Value::Int(i) => Err(self.bad(format!("{what} is negative ({i})"))),
            other => Err(self.bad(format!("{what} is {}, not an integer", other.kind()))),
        }
    }

    /// `v` as a tuple of non-negative integers.
    fn uints(&self, v: Value, what: &str) -> Result<Vec<u64>, PickleError> {
        let items = self.tuple(v, what)?;
        items.into_iter().map(|i| self.uint(i, what)).collect()
    }

    /// `func(*args)` for the allowed callables.
    pub(super) fn reduce(&mut self, func: Value, args: Value) -> Result<Value, PickleError> {
        let Value::Global(g) = func else {
            return Err(self.bad(format!("REDUCE calls {}", func.kind())));
        };
        let Value::Tuple(args_id) = args else {
            return Err(self.bad(format!("REDUCE arguments are {}", args.kind())));
        };
        let n = self.heap.seqs[args_id as usize].len();
        let arity_ok = match g {
            Global::OrderedDict => n <= 1,
            Global::RebuildTensorV2 => n == 6 || n == 7,
            Global::RebuildTensor | Global::RebuildParameterWithState => n == 4,
            Global::RebuildParameter => n == 3,
            Global::Storage(_) | Global::Dtype(_) => {
                return Err(self.bad(format!(
                    "{} is called, which a state dict never does",
                    g.name()
                )));
            }
        };
        if !arity_ok {
            return Err(self.bad(format!("{} is called with {n} arguments", g.name())));
        }
        let args = self.tuple(args, "REDUCE arguments")?;
        match g {
            Global::OrderedDict => {
                // `OrderedDict(pairs)`, as Python 2 pickled it; pairs are lists or tuples.
                let mut pairs = Chunked::default();
                if let Some(&items) = args.first() {
                    let (Value::List(l) | Value::Tuple(l)) = items else {
                        return Err(
                            self.bad(format!("OrderedDict is called with {}", items.kind()))
                        );
                    };
                    let n = self.heap.seqs[l as usize].len();
                    self.spend(n.saturating_mul(2))?;
                    for &pair in self.heap.seqs[l as usize].iter() {
                        let (Value::List(p) | Value::Tuple(p)) = pair else {
                            return Err(self.bad("an OrderedDict item is not a pair"));
                        };
                        let p = &self.heap.seqs[p as usize];
                        if p.len() != 2 {
                            return Err(self.bad("an OrderedDict item is not a pair"));
                        }
                        pairs.push((p[0], p[1]));
                    }
                }
                self.new_dict(pairs)
            }
            Global::RebuildTensorV2 | Global::RebuildTensor => {
                let Value::Storage(storage) = args[0] else {
                    return Err(self.bad(format!(
                        "a tensor is rebuilt from {}, not a storage",
                        args[0].kind()
                    )));
                };
                let offset = self.uint(args[1], "a tensor's storage offset")?;
                let shape = self.uints(args[2], "a tensor's size")?;
                let stride = self.uints(args[3], "a tensor's stride")?;
                if shape.len() > MAX_DIMS {
                    return Err(self.bad(format!(
                        "a tensor has {} dimensions, more than {MAX_DIMS}",
                        shape.len()
                    )));
                }
                if shape.len() != stride.len() {
                    return Err(self.bad(format!(
                        "a tensor has {} sizes but {} strides",
                        shape.len(),
                        stride.len()
                    )));
                }
                let id = self.id(self.heap.tensors.len())?;
                self.spend(shape.len())?;
                self.heap.tensors.push(TensorRef {
                    storage,
                    offset,
                    shape,
                    stride,
                });
                Ok(Value::Tensor(id))
            }
            Global::RebuildParameter | Global::RebuildParameterWithState => match args[0] {
                t @ Value::Tensor(_) => Ok(t),
                other => Err(self.bad(format!("a Parameter wraps {}", other.kind()))),
            },
            Global::Storage(_) | Global::Dtype(_) => Err(self.bad(format!(
                "{} is called, which a state dict never does",
                g.name()
            ))),
        }
    }

    /// The storage a persistent id names.
    pub(super) fn persistent(&mut self, pid: Value) -> Result<Value, PickleError> {
        let Value::Tuple(id) = pid else {
            return Err(self.bad(format!("a persistent id is {}", pid.kind())));
        };
        let len = self.heap.seqs[id as usize].len();
        if len == 0 || len > 6 {
            return Err(self.bad(format!("a persistent id has {len} fields")));
        }
        let t = self.tuple(pid, "a persistent id")?;
        match self.text(t[0]) {
            Some("storage") => {}
            Some("module") => {
                return Err(self.bad("the file holds a pickled nn.Module, not a state dict"));
            }
            _ => return Err(self.bad("a persistent id does not name a storage")),
        }
        let want = match self.form {
            PidForm::Forbidden => {
                return Err(self.bad("a storage is referenced outside the main pickle"));
            }
            PidForm::Zip => 5,
            PidForm::Legacy => 6,
        };
        if len != want {
            return Err(self.bad(format!(
                "a storage persistent id has {len} fields, expected {want}"
            )));
        }
        let dtype = match t[1] {
            Value::Global(Global::Storage(d) | Global::Dtype(d)) => d,
            other => {
                return Err(self.bad(format!(
                    "a storage's type is {}, not a storage class",
                    other.kind()
                )));
            }
        };
        let key = self.key(t[2], "storage key")?;
        let numel = self.uint(t[4], "a storage's size")?;
        let view = match t.get(5) {
            None | Some(Value::None) => None,
            Some(&v) => match self.tuple(v, "a storage view")?[..] {
                [k, offset, size] => Some(View {
                    key: self.key(k, "view key")?,
                    offset: self.uint(offset, "a storage view's offset")?,
                    numel: self.uint(size, "a storage view's size")?,
                }),
                _ => return Err(self.bad("a storage view is not (key, offset, size)")),
            },
        };
        let sid = self.id(self.heap.storages.len())?;
        self.heap.storages.push(StorageRef {
            dtype,
            key,
            numel,
            view,
        });
        Ok(Value::Storage(sid))
    }

    /// A storage or view key (str, bytes or int) as text.
    fn key(&self, v: Value, what: &str) -> Result<String, PickleError> {
        match v {
            Value::Int(i) => Ok(i.to_string()),
            _ => match self.text(v) {
                Some(s) => Ok(s.to_owned()),
                None => Err(self.bad(format!("a {what} is {}", v.kind()))),
            },
        }
    }
}
