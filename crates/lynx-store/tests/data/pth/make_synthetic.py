"""Writes the small synthetic `.pth` files in this folder and `synthetic.json`.

No torch needed: a stand-in `torch` module gives the pickler the same globals torch.save
references (`torch._utils._rebuild_tensor_v2`, `torch.FloatStorage`, …), and the files are
laid out as torch/serialization.py writes them (`_save` into a zip with 64-byte aligned
STORED records and ZIP64 end records; `_legacy_save` as a run of pickles and raw
storages). Tensor bytes are random; `synthetic.json` lists, per file, every tensor's
flattened key, dtype, shape and hex bytes, or the error text expected.

Run: python3 make_synthetic.py   (deterministic)
"""

import collections
import io
import json
import pickle
import random
import struct
import sys
import types
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
rng = random.Random(1234)

# --- a stand-in torch module -------------------------------------------------------------
torch = types.ModuleType("torch")
torch_utils = types.ModuleType("torch._utils")
torch_storage = types.ModuleType("torch.storage")
torch._utils = torch_utils
torch.storage = torch_storage
sys.modules.update({"torch": torch, "torch._utils": torch_utils, "torch.storage": torch_storage})


def _fn(mod, name):
    def f(*args):
        raise RuntimeError("never called")

    f.__module__ = mod.__name__
    f.__name__ = f.__qualname__ = name
    setattr(mod, name, f)
    return f


rebuild_v2 = _fn(torch_utils, "_rebuild_tensor_v2")
rebuild_parameter = _fn(torch_utils, "_rebuild_parameter")

STORAGES = {
    "F64": ("DoubleStorage", 8),
    "F32": ("FloatStorage", 4),
    "F16": ("HalfStorage", 2),
    "BF16": ("BFloat16Storage", 2),
    "I64": ("LongStorage", 8),
    "I32": ("IntStorage", 4),
    "I16": ("ShortStorage", 2),
    "I8": ("CharStorage", 1),
    "U8": ("ByteStorage", 1),
    "Bool": ("BoolStorage", 1),
}
for cls_name, _ in STORAGES.values():
    setattr(torch, cls_name, type(cls_name, (), {"__module__": "torch"}))
torch_storage.UntypedStorage = type("UntypedStorage", (), {"__module__": "torch.storage"})


class DType:
    """Pickles as the global `torch.<name>`, like torch.dtype."""

    def __init__(self, name):
        self.name = name

    def __reduce__(self):
        return self.name


DType.__module__ = "torch"
for n in ["float16", "bfloat16", "float32"]:
    setattr(torch, n, DType(n))


class Storage:
    def __init__(self, key, dtype, numel, type_global=None):
        self.key, self.dtype, self.numel = key, dtype, numel
        self.type_global = type_global or getattr(torch, STORAGES[dtype][0])
        self.data = bytes(rng.randrange(256) for _ in range(numel * STORAGES[dtype][1]))
        self.view = None  # legacy: (view_key, offset, size)


class Tensor:
    def __init__(self, storage, offset, shape, stride=None, parameter=False):
        if stride is None:
            stride, acc = [], 1
            for d in reversed(shape):
                stride.insert(0, acc)
                acc *= d
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride
        self.parameter = parameter

    def __reduce_ex__(self, proto):
        args = (self.storage, self.offset, tuple(self.shape), tuple(self.stride), False,
                collections.OrderedDict())
        if self.parameter:
            plain = Tensor(self.storage, self.offset, self.shape, self.stride)
            return (rebuild_parameter, (plain, True, collections.OrderedDict()))
        return (rebuild_v2, args)

    def expected(self, name):
        size = STORAGES[self.storage.dtype][1]
        numel = 1
        for d in self.shape:
            numel *= d
        start = self.offset * size
        data = self.storage.data
        if self.storage.view is not None:
            data = data[self.storage.view[1] * size:]
        return {"name": name, "dtype": self.storage.dtype, "shape": self.shape,
                "hex": data[start:start + numel * size].hex()}


def pickle_with_storages(obj, protocol, legacy):
    buf = io.BytesIO()
    p = pickle.Pickler(buf, protocol=protocol)
    seen = {}

    def persistent_id(o):
        if not isinstance(o, Storage):
            return None
        seen[o.key] = o
        if legacy:
            return ("storage", o.type_global, o.key, "cpu", o.numel, o.view)
        return ("storage", o.type_global, o.key, "cpu", o.numel)

    p.persistent_id = persistent_id
    p.dump(obj)
    return buf.getvalue(), seen


# --- writers ---------------------------------------------------------------------------
def zip_bytes(prefix, records, methods=None):
    """A zip laid out like torch's writer: aligned STORED records, ZIP64 end records."""
    methods = methods or {}
    out, central = bytearray(), []
    for name, data in records:
        full = f"{prefix}/{name}".encode()
        off = len(out)
        pad = (-(off + 30 + len(full) + 4)) % 64
        extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
        crc = zlib.crc32(data)
        method = methods.get(name, 0)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc,
                           len(data), len(data), len(full), len(extra))
        out += full + extra + data
        central.append((full, crc, len(data), off, method))
    cd_off = len(out)
    for full, crc, size, off, method in central:
        out += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 0x31E, 20, 0, method, 0, 0x21,
                           crc, size, size, len(full), 0, 0, 0, 0, 0, off)
        out += full
    cd_size, n = len(out) - cd_off, len(central)
    eocd64 = len(out)
    out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 0x1E, 0x2D, 0, 0, n, n, cd_size, cd_off)
    out += struct.pack("<IIQI", 0x07064B50, 0, eocd64, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, cd_size, cd_off, 0)
    return bytes(out)


def save_zip(obj, prefix, protocol=2, byteorder=b"little", methods=None, extra=()):
    pkl, storages = pickle_with_storages(obj, protocol, legacy=False)
    records = [("data.pkl", pkl), ("byteorder", byteorder)]
    records += [(f"data/{k}", s.data) for k, s in sorted(storages.items())]
    records += [("version", b"3\n"), (".data/serialization_id", b"1234")] + list(extra)
    return zip_bytes(prefix, records, methods)


MAGIC = 0x1950A86A20F9469CFC6C


def save_legacy(obj, roots):
    out = bytearray()
    for head in [MAGIC, 1001, {"protocol_version": 1001, "little_endian": True,
                               "type_sizes": {"short": 2, "int": 4, "long": 4}}]:
        out += pickle.dumps(head, protocol=2)
    pkl, _ = pickle_with_storages(obj, 2, legacy=True)
    out += pkl
    keys = sorted(roots)
    out += pickle.dumps(keys, protocol=2)
    for k in keys:
        s = roots[k]
        out += struct.pack("<q", s.numel) + s.data
    return bytes(out)


# --- the files -------------------------------------------------------------------------
def flat(tensors, prefix=""):
    return [t.expected(prefix + name) for name, t in tensors]


files = {}

# 1. Protocol 4, every dtype, a wrapped and nested state dict, shared storages,
#    a Parameter, an untyped storage, a dtype as storage type, an empty tensor.
s_shared = Storage("10", "F32", 10)
sd = [
    ("f32", Tensor(Storage("0", "F32", 6), 0, [2, 3])),
    ("f16", Tensor(Storage("1", "F16", 4), 0, [4])),
    ("bf16", Tensor(Storage("2", "BF16", 4, torch.bfloat16), 0, [2, 2])),
    ("f64", Tensor(Storage("3", "F64", 3), 0, [3])),
    ("num_batches_tracked", Tensor(Storage("4", "I64", 1), 0, [])),
    ("i32", Tensor(Storage("5", "I32", 5), 0, [5])),
    ("i16", Tensor(Storage("6", "I16", 3), 0, [1, 3], [7, 1])),
    ("i8", Tensor(Storage("7", "I8", 2), 0, [2])),
    ("u8", Tensor(Storage("8", "U8", 3, torch_storage.UntypedStorage), 0, [3])),
    ("bool", Tensor(Storage("9", "Bool", 4), 0, [4])),
    ("shared.a", Tensor(s_shared, 0, [4])),
    ("shared.b", Tensor(s_shared, 4, [2, 3])),
    ("param", Tensor(Storage("11", "F32", 2), 0, [2], parameter=True)),
    ("empty", Tensor(Storage("12", "F32", 0), 0, [0, 3])),
]
layer = Tensor(Storage("13", "F16", 2), 0, [2])
w = Tensor(Storage("14", "F32", 1), 0, [1, 1])
obj = {
    "epoch": 7,
    "config": {"lr": 0.1, "name": "x", "sizes": [1, 2]},
    "state_dict": collections.OrderedDict(sd),
    "layers": [layer, {"w": w}],
}
files["synthetic_p4.pth"] = (
    save_zip(obj, "synthetic_p4", protocol=4),
    flat(sd, "state_dict.") + flat([("layers.0", layer), ("layers.1.w", w)]),
)

# 2. Legacy, with a storage view (as torch < 1.0 wrote for views of a shared root).
r1, r2 = Storage("r1", "F32", 8), Storage("r2", "I64", 1)
v1 = Storage("r1", "F32", 8)
v1.data, v1.view = r1.data, ("v1", 2, 4)
legacy = [
    ("a", Tensor(r1, 0, [8])),
    ("b", Tensor(v1, 0, [2, 2])),
    ("c", Tensor(r2, 0, [])),
]
files["synthetic_legacy.pth"] = (
    save_legacy(collections.OrderedDict(legacy), {"r1": r1, "r2": r2}),
    flat(legacy),
)

# 3. Files that must be rejected, with the words the error must contain.
t = Tensor(Storage("0", "F32", 6), 0, [2, 3], [1, 2])
files["synthetic_noncontiguous.pth"] = (
    save_zip({"t": t}, "synthetic_noncontiguous"),
    "tensor `t` is not contiguous",
)
t = Tensor(Storage("0", "F32", 6), 0, [6])
files["synthetic_deflated.pth"] = (
    save_zip({"t": t}, "x", methods={"data/0": 8}),
    "entry `x/data/0` is compressed (method 8)",
)
files["synthetic_bigendian.pth"] = (
    save_zip({"t": t}, "x", byteorder=b"big"),
    "big-endian",
)
files["synthetic_torchscript.pth"] = (
    save_zip({"t": t}, "x", extra=[("constants.pkl", b"")]),
    "TorchScript",
)
files["synthetic_past_storage.pth"] = (
    save_zip({"t": Tensor(Storage("0", "F32", 6), 4, [3])}, "x"),
    "tensor `t` (3 f32 elements at offset 4) runs past its storage `0` (24 bytes)",
)
tar = bytearray(1024)
tar[0:7] = b"storage"
tar[257:263] = b"ustar\x00"
files["synthetic_tar.pth"] = (bytes(tar), "tar archive")
files["synthetic_os_system.pth"] = (
    zip_bytes("x", [("data.pkl", b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00lsR.")]),
    "global `os.system` is not allowed in a state dict",
)

expected = {}
for name, (data, exp) in files.items():
    (HERE / name).write_bytes(data)
    expected[name] = exp if isinstance(exp, list) else {"error": exp}
(HERE / "synthetic.json").write_text(json.dumps(expected, indent=1) + "\n")
print("wrote", ", ".join(files))
