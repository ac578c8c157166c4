//! A restricted unpickler for the pickles that `torch.save` writes.
//!
//! The opcode semantics are those of CPython's `Lib/pickle.py` (`_Unpickler`) as
//! catalogued in `Lib/pickletools.py`; the restrictions follow the spirit of
//! `torch/_weights_only_unpickler.py`: nothing is imported or called. A `GLOBAL` resolves
//! only to the handful of callables and types a state dict needs ([`Global`]), `REDUCE`
//! evaluates those few natively, and a persistent id (`BINPERSID`) only names a storage,
//! as `persistent_load` in `torch/serialization.py` expects.
//!
//! Objects live in arenas ([`Heap`]) and values refer to them by index, so sharing through
//! the memo behaves as in Python, cycles cost nothing, and dropping never recurses. Every
//! length is checked against the bytes left before anything is allocated, and the stack,
//! the mark stack, the memo and the total number of container items are bounded.

mod objects;
mod torch;

pub(crate) use objects::{
    Global, Heap, Id, Loaded, PickleError, PidForm, StorageRef, TensorRef, Value,
};

use super::chunked::Chunked;

/// Most values the stack may hold; a state dict needs a few thousand at most (the pickler
/// batches `SETITEMS` by 1000 pairs).
const MAX_STACK: usize = 1 << 15;
/// Deepest `MARK` nesting allowed.
const MAX_MARKS: usize = 1 << 10;
/// Longest text line (`GLOBAL` names, `INT`) read.
const MAX_LINE: usize = 512;

/// Unpickles the pickle starting at `data[start]`.
pub(crate) fn load(data: &[u8], start: usize, form: PidForm) -> Result<Loaded, PickleError> {
    let mut m = Machine {
        data,
        pos: start,
        op_pos: start,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: Chunked::default(),
        heap: Heap::default(),
        form,
        // Every container item stems from an opcode, except copies made by
        // `OrderedDict(pairs)`; twice the pickle's size bounds both.
        item_budget: data.len().saturating_sub(start).saturating_mul(2) + 4096,
    };
    let root = m.run()?;
    Ok(Loaded {
        root,
        heap: m.heap,
        end: m.pos,
    })
}

/// The unpickling state.
struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    op_pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    /// Memo slots; torch's writers (and its C++ reader) number them 0, 1, 2, …
    memo: Chunked<Value>,
    heap: Heap,
    form: PidForm,
    item_budget: usize,
}

/// Name of an opcode byte, for messages.
fn op_name(op: u8) -> String {
    let name = match op {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'L' => "LONG",
        b'P' => "PERSID",
        b'S' => "STRING",
        b'V' => "UNICODE",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'g' => "GET",
        b'i' => "INST",
        b'o' => "OBJ",
        b'p' => "PUT",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x92 => "NEWOBJ_EX",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => "",
    };
    if name.is_empty() {
        format!("0x{op:02x}")
    } else {
        format!("0x{op:02x} ({name})")
    }
}

impl<'a> Machine<'a> {
    /// An error at the current opcode.
    fn bad(&self, msg: impl Into<String>) -> PickleError {
        PickleError::Bad {
            pos: self.op_pos,
            msg: msg.into(),
        }
    }

    /// The next `n` bytes.
    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let data: &'a [u8] = self.data;
        match self.pos.checked_add(n) {
            Some(end) if end <= data.len() => {
                let s = &data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            _ => Err(PickleError::Truncated { pos: self.op_pos }),
        }
    }

    /// Takes a declared length, refusing it unless that many bytes are left.
    fn take_len(&mut self, n: u64) -> Result<&'a [u8], PickleError> {
        let n = usize::try_from(n).map_err(|_| PickleError::Truncated { pos: self.op_pos })?;
        self.take(n)
    }

    /// The next byte.
    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    /// The next `N` bytes, as an array.
    fn array<const N: usize>(&mut self) -> Result<[u8; N], PickleError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// The next text line, without its newline.
    fn line(&mut self) -> Result<&'a [u8], PickleError> {
        let rest = &self.data[self.pos..];
        let window = &rest[..rest.len().min(MAX_LINE)];
        match window.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let l = self.take(i + 1)?;
                Ok(&l[..i])
            }
            None if rest.len() < MAX_LINE => Err(PickleError::Truncated { pos: self.op_pos }),
            None => Err(self.bad(format!("a text line is longer than {MAX_LINE} bytes"))),
        }
    }

    /// Pushes `v`, within [`MAX_STACK`].
    fn push(&mut self, v: Value) -> Result<(), PickleError> {
        if self.stack.len() >= MAX_STACK {
            return Err(self.bad(format!("the stack grows beyond {MAX_STACK} values")));
        }
        self.stack.push(v);
        Ok(())
    }

    /// Pops a value above the last mark.
    fn pop(&mut self) -> Result<Value, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.bad("an opcode pops from an empty stack"));
        }
        Ok(self.stack.pop().unwrap_or(Value::None))
    }

    /// The value on top, above the last mark.
    fn top(&self) -> Result<Value, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.bad("an opcode reads an empty stack"));
        }
        Ok(self.stack[self.stack.len() - 1])
    }

    /// Pops everything above the last mark, and the mark.
    fn pop_mark(&mut self) -> Result<Vec<Value>, PickleError> {
        let Some(m) = self.marks.pop() else {
            return Err(self.bad("an opcode needs a MARK that is not there"));
        };
        Ok(self.stack.split_off(m.min(self.stack.len())))
    }

    /// Charges `items` container slots to the pickle's budget.
    fn spend(&mut self, items: usize) -> Result<(), PickleError> {
        match self.item_budget.checked_sub(items) {
            Some(left) => {
                self.item_budget = left;
                Ok(())
            }
            None => Err(self.bad("containers hold more items than the pickle's size allows")),
        }
    }

    /// `len` (an arena's length) as the [`Id`] of its next object.
    fn id(&self, len: usize) -> Result<Id, PickleError> {
        Id::try_from(len).map_err(|_| self.bad("the pickle builds too many objects"))
    }

    /// A new tuple or list holding `items`.
    fn new_seq(&mut self, items: Vec<Value>, tuple: bool) -> Result<Value, PickleError> {
        self.spend(items.len())?;
        let id = self.id(self.heap.seqs.len())?;
        self.heap.seqs.push(items.into_iter().collect());
        Ok(if tuple {
            Value::Tuple(id)
        } else {
            Value::List(id)
        })
    }

    /// Adds a dict whose items were already paid for with [`Machine::spend`].
    fn new_dict(&mut self, pairs: Chunked<(Value, Value)>) -> Result<Value, PickleError> {
        let id = self.id(self.heap.dicts.len())?;
        self.heap.dicts.push(pairs);
        Ok(Value::Dict(id))
    }

    /// A new text string from UTF-8 `bytes`.
    fn new_str(&mut self, bytes: &[u8]) -> Result<Value, PickleError> {
        let s = std::str::from_utf8(bytes).map_err(|_| self.bad("a string is not valid UTF-8"))?;
        let id = self.id(self.heap.strs.len())?;
        self.heap.strs.push(s.to_owned());
        Ok(Value::Str(id))
    }

    /// A new byte string, or big integer.
    fn new_blob(&mut self, bytes: &[u8], big_int: bool) -> Result<Value, PickleError> {
        let id = self.id(self.heap.blobs.len())?;
        self.heap.blobs.push(bytes.to_vec());
        Ok(if big_int {
            Value::BigInt(id)
        } else {
            Value::Bytes(id)
        })
    }

    /// A little-endian two's complement integer (`LONG1`, `LONG4`).
    fn long(&mut self, bytes: &[u8]) -> Result<Value, PickleError> {
        if bytes.len() > 8 {
            return self.new_blob(bytes, true);
        }
        if bytes.is_empty() {
            return Ok(Value::Int(0));
        }
        let fill = if bytes[bytes.len() - 1] & 0x80 != 0 {
            0xff
        } else {
            0
        };
        let mut a = [fill; 8];
        a[..bytes.len()].copy_from_slice(bytes);
        Ok(Value::Int(i64::from_le_bytes(a)))
    }

    /// Stores the top value in memo slot `idx` (the next one, or an existing one).
    fn memo_put(&mut self, idx: u32) -> Result<(), PickleError> {
        let v = self.top()?;
        let idx = idx as usize;
        if idx < self.memo.len() {
            self.memo[idx] = v;
        } else if idx == self.memo.len() {
            self.spend(1)?;
            self.memo.push(v);
        } else {
            return Err(self.bad(format!(
                "memo entry {idx} is written before entry {}",
                self.memo.len()
            )));
        }
        Ok(())
    }

    /// Pushes memo slot `idx`.
    fn memo_get(&mut self, idx: u32) -> Result<(), PickleError> {
        match self.memo.get(idx as usize) {
            Some(&v) => self.push(v),
            None => Err(self.bad(format!("memo entry {idx} is read before it is written"))),
        }
    }

    /// `v` as text, if it is a str or UTF-8 bytes.
    fn text(&self, v: Value) -> Option<&str> {
        match v {
            Value::Str(id) => Some(&self.heap.strs[id as usize]),
            Value::Bytes(id) => std::str::from_utf8(&self.heap.blobs[id as usize]).ok(),
            _ => None,
        }
    }

    /// Executes opcodes up to `STOP`; returns the object left on the stack.
    fn run(&mut self) -> Result<Value, PickleError> {
        loop {
            self.op_pos = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(self.bad(format!("pickle protocol {proto} is newer than 5")));
                    }
                }
                0x95 => {
                    // FRAME: only a hint for buffered readers.
                    let n = u64::from_le_bytes(self.array()?);
                    let left = (self.data.len() - self.pos) as u64;
                    if n > left {
                        return Err(PickleError::Truncated { pos: self.op_pos });
                    }
                }
                b'.' => return self.pop(),
                b'(' => {
                    if self.marks.len() >= MAX_MARKS {
                        return Err(self.bad(format!("MARKs nest deeper than {MAX_MARKS}")));
                    }
                    self.marks.push(self.stack.len());
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?;
                    self.push(v)?;
                }
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'I' => {
                    let line = self.line()?;
                    let v = match line {
                        b"00" => Value::Bool(false),
                        b"01" => Value::Bool(true),
                        _ => std::str::from_utf8(line)
                            .ok()
                            .and_then(|s| s.trim().parse::<i64>().ok())
                            .map(Value::Int)
                            .ok_or_else(|| self.bad("an INT opcode holds no integer"))?,
                    };
                    self.push(v)?;
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.array()?);
                    self.push(Value::Int(v.into()))?;
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v.into()))?;
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.array()?);
                    self.push(Value::Int(v.into()))?;
                }
                0x8a => {
                    let n = self.u8()?;
                    let bytes = self.take(n.into())?;
                    let v = self.long(bytes)?;
                    self.push(v)?;
                }
                0x8b => {
                    let n = i32::from_le_bytes(self.array()?);
                    let n = u64::try_from(n).map_err(|_| self.bad("LONG4 has a negative size"))?;
                    let bytes = self.take_len(n)?;
                    let v = self.long(bytes)?;
                    self.push(v)?;
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.array()?);
                    self.push(Value::Float(v))?;
                }
                // Text: SHORT_BINUNICODE, BINUNICODE, BINUNICODE8, and Python 2's
                // SHORT_BINSTRING / BINSTRING, which torch.load decodes as UTF-8.
                0x8c | b'U' => {
                    let n = self.u8()?;
                    let bytes = self.take(n.into())?;
                    let v = self.new_str(bytes)?;
                    self.push(v)?;
                }
                b'X' => {
                    let n = u32::from_le_bytes(self.array()?);
                    let bytes = self.take_len(n.into())?;
                    let v = self.new_str(bytes)?;
                    self.push(v)?;
                }
                0x8d => {
                    let n = u64::from_le_bytes(self.array()?);
                    let bytes = self.take_len(n)?;
                    let v = self.new_str(bytes)?;
                    self.push(v)?;
                }
                b'T' => {
                    let n = i32::from_le_bytes(self.array()?);
                    let n =
                        u64::try_from(n).map_err(|_| self.bad("BINSTRING has a negative size"))?;
                    let bytes = self.take_len(n)?;
                    let v = self.new_str(bytes)?;
                    self.push(v)?;
                }
                // Bytes: SHORT_BINBYTES, BINBYTES, BINBYTES8.
                b'C' => {
                    let n = self.u8()?;
                    let bytes = self.take(n.into())?;
                    let v = self.new_blob(bytes, false)?;
                    self.push(v)?;
                }
                b'B' => {
                    let n = u32::from_le_bytes(self.array()?);
                    let bytes = self.take_len(n.into())?;
                    let v = self.new_blob(bytes, false)?;
                    self.push(v)?;
                }
                0x8e => {
                    let n = u64::from_le_bytes(self.array()?);
                    let bytes = self.take_len(n)?;
                    let v = self.new_blob(bytes, false)?;
                    self.push(v)?;
                }
                b')' => {
                    let v = self.new_seq(Vec::new(), true)?;
                    self.push(v)?;
                }
                b't' => {
                    let items = self.pop_mark()?;
                    let v = self.new_seq(items, true)?;
                    self.push(v)?;
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = vec![Value::None; n];
                    for slot in items.iter_mut().rev() {
                        *slot = self.pop()?;
                    }
                    let v = self.new_seq(items, true)?;
                    self.push(v)?;
                }
                b']' => {
                    let v = self.new_seq(Vec::new(), false)?;
                    self.push(v)?;
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    let v = self.new_seq(items, false)?;
                    self.push(v)?;
                }
                b'a' => {
                    let item = self.pop()?;
                    self.append(vec![item])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                b'}' => {
                    let v = self.new_dict(Chunked::default())?;
                    self.push(v)?;
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.spend(pairs.len().saturating_mul(2))?;
                    let v = self.new_dict(pairs.into_iter().collect())?;
                    self.push(v)?;
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.set_items(vec![(key, value)])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.set_items(pairs)?;
                }
                b'q' => {
                    let i = self.u8()?;
                    self.memo_put(i.into())?;
                }
                b'r' => {
                    let i = u32::from_le_bytes(self.array()?);
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i = self.id(self.memo.len())?;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.u8()?;
                    self.memo_get(i.into())?;
                }
                b'j' => {
                    let i = u32::from_le_bytes(self.array()?);
                    self.memo_get(i)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let g = self.global(module, name)?;
                    self.push(g)?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(m), Value::Str(n)) = (module, name) else {
                        return Err(self.bad("STACK_GLOBAL needs two strings"));
                    };
                    let (m, n) = (&self.heap.strs[m as usize], &self.heap.strs[n as usize]);
                    let g = self.global(m.as_bytes(), n.as_bytes())?;
                    self.push(g)?;
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let v = self.reduce(func, args)?;
                    self.push(v)?;
                }
                b'b' => {
                    let _state = self.pop()?;
                    match self.top()? {
                        // `OrderedDict._metadata` and tensor attributes: not needed.
                        Value::Dict(_) | Value::Tensor(_) => {}
                        other => {
                            return Err(self.bad(format!(
                                "BUILD sets the state of {}, which a state dict never does",
                                other.kind()
                            )));
                        }
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent(pid)?;
                    self.push(v)?;
                }
                _ => {
                    return Err(self.bad(format!(
                        "opcode {} is not allowed in a state dict",
                        op_name(op)
                    )));
                }
            }
        }
    }

    /// `k1, v1, k2, v2, …` as pairs.
    fn pairs(&self, items: Vec<Value>) -> Result<Vec<(Value, Value)>, PickleError> {
        if !items.len().is_multiple_of(2) {
            return Err(self.bad("a dict is built from an odd number of values"));
        }
        Ok(items.chunks_exact(2).map(|p| (p[0], p[1])).collect())
    }

    /// Appends `items` to the list on top of the stack.
    fn append(&mut self, items: Vec<Value>) -> Result<(), PickleError> {
        let Value::List(id) = self.top()? else {
            let kind = self.top()?.kind();
            return Err(self.bad(format!("APPEND(S) targets {kind}, not a list")));
        };
        self.spend(items.len())?;
        self.heap.seqs[id as usize].extend(items);
        Ok(())
    }

    /// Adds `pairs` to the dict on top of the stack.
    fn set_items(&mut self, pairs: Vec<(Value, Value)>) -> Result<(), PickleError> {
        let Value::Dict(id) = self.top()? else {
            let kind = self.top()?.kind();
            return Err(self.bad(format!("SETITEM(S) targets {kind}, not a dict")));
        };
        self.spend(pairs.len().saturating_mul(2))?;
        self.heap.dicts[id as usize].extend(pairs);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(data: &[u8]) -> String {
        match load(data, 0, PidForm::Zip) {
            Err(PickleError::Bad { msg, .. }) => msg,
            Err(PickleError::Truncated { pos }) => format!("truncated at {pos}"),
            Ok(l) => panic!("expected an error, got {:?}", l.root),
        }
    }

    #[test]
    fn rejects_foreign_globals() {
        let msg = err(b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00lsR.");
        assert_eq!(msg, "global `os.system` is not allowed in a state dict");
        let msg = err(b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.");
        assert_eq!(msg, "global `builtins.eval` is not allowed in a state dict");
        let msg = err(b"\x80\x02ctorch\nComplexFloatStorage\n.");
        assert!(msg.contains("`torch.ComplexFloatStorage` belongs to a tensor dtype that is"));
        let msg = err(b"\x80\x02ctorch._utils\n_rebuild_tensor_v3\n.");
        assert!(msg.contains("dtype that is not supported"), "{msg}");
    }

    #[test]
    fn rejects_unknown_opcodes_and_truncation() {
        assert!(err(b"\x80\x02\x81.").contains("NEWOBJ"));
        assert_eq!(err(b"\x80\x02X\xff\xff\xff\xff"), "truncated at 2");
        assert_eq!(err(b"\x80\x02}"), "truncated at 3");
    }

    #[test]
    fn shares_memoized_containers() {
        // d = {}; memo[0] = d; l = [d]; pop l; d["a"] = 1 → l[0] sees it.
        let l = load(
            b"\x80\x02}q\x00]q\x01h\x00a0X\x01\x00\x00\x00aK\x01s.",
            0,
            PidForm::Zip,
        );
        let l = l.unwrap_or_else(|_| panic!("valid pickle"));
        assert_eq!(l.root, Value::Dict(0));
        assert_eq!(l.heap.dicts[0].len(), 1);
        assert!(l.heap.seqs[0].iter().eq([&Value::Dict(0)]));
    }
}
