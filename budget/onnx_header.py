"""What an ONNX file declares, read without onnx or onnxruntime: its graph's inputs and outputs, and its weights.

An ONNX model is one protobuf `ModelProto`; the graph's inputs, outputs and initializers sit inside it beside
megabytes of raw tensor bytes. This walks the wire format and seeks past every payload it does not need, so
the planner can tell a Kokoro model from a Piper voice (and count its parameters) in milliseconds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from budget.estimate import PlanInputError

# TensorProto.DataType -> (name, bytes per element); strings and the 4-bit types are counted as one byte.
ELEM_TYPES = {1: ("float32", 4), 2: ("uint8", 1), 3: ("int8", 1), 4: ("uint16", 2), 5: ("int16", 2),
              6: ("int32", 4), 7: ("int64", 8), 8: ("string", 1), 9: ("bool", 1), 10: ("float16", 2),
              11: ("float64", 8), 12: ("uint32", 4), 13: ("uint64", 8), 16: ("bfloat16", 2), 17: ("float8e4m3", 1),
              19: ("float8e5m2", 1), 21: ("uint4", 1), 22: ("int4", 1)}
_MODEL_GRAPH, _MODEL_PRODUCER = 7, 2
_GRAPH_INITIALIZER, _GRAPH_INPUT, _GRAPH_OUTPUT = 5, 11, 12


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    elem_type: str            # "float32", "int64", ... ("?" when the file does not say)
    shape: tuple              # ints, names of symbolic dimensions, or None where a dimension is unknown

    def __str__(self) -> str:
        dims = " × ".join("?" if d is None else str(d) for d in self.shape) or "scalar"
        return f"{self.name} ({self.elem_type}, {dims})"  # no square brackets: rich would read them as markup


@dataclass(slots=True)
class OnnxHeader:
    producer: str = ""
    inputs: list[TensorInfo] = field(default_factory=list)    # what a caller feeds (initializers left out)
    outputs: list[TensorInfo] = field(default_factory=list)
    parameters: int = 0       # elements of every initializer
    weight_bytes: int = 0     # their bytes as stored
    bytes_by_type: dict[str, int] = field(default_factory=dict)

    @property
    def weight_dtype(self) -> str:
        """The element type holding most of the weights' bytes ("int8" for a dynamically quantized export)."""
        return max(self.bytes_by_type, key=self.bytes_by_type.get, default="?")

    def input(self, *names: str) -> TensorInfo | None:
        return next((i for i in self.inputs if i.name in names), None)


def read_onnx_header(path: Path) -> OnnxHeader:
    """The graph's inputs, outputs and initializer sizes; PlanInputError (naming the file) if it is not ONNX."""
    try:
        with open(path, "rb") as f:
            size = path.stat().st_size
            header, initializer_names = OnnxHeader(), set()
            graph_seen = False
            for number, wire, value in _fields(f, size):
                if number == _MODEL_GRAPH and wire == 2:
                    graph_seen = True
                    _read_graph(f, f.tell() + value, header, initializer_names)
                elif number == _MODEL_PRODUCER and wire == 2:
                    header.producer = f.read(value).decode("utf-8", "replace")
                elif wire == 2:
                    f.seek(value, 1)
    except (ValueError, EOFError, UnicodeDecodeError) as error:
        raise PlanInputError(f"{path} is not an ONNX model ({error}); download or assemble it again") from None
    if not graph_seen:
        raise PlanInputError(f"{path} is not an ONNX model (it holds no graph); download or assemble it again")
    header.inputs = [i for i in header.inputs if i.name not in initializer_names]
    return header


def _read_graph(f: BinaryIO, end: int, header: OnnxHeader, initializer_names: set) -> None:
    for number, wire, value in _fields(f, end):
        if wire != 2:
            continue
        stop = f.tell() + value
        if number == _GRAPH_INITIALIZER:
            name, count, elem = _read_initializer(f, stop)
            initializer_names.add(name)
            header.parameters += count
            header.weight_bytes += count * ELEM_TYPES.get(elem, ("?", 4))[1]
            kind = ELEM_TYPES.get(elem, ("?", 4))[0]
            header.bytes_by_type[kind] = header.bytes_by_type.get(kind, 0) + count * ELEM_TYPES.get(elem, ("?", 4))[1]
        elif number in (_GRAPH_INPUT, _GRAPH_OUTPUT):
            (header.inputs if number == _GRAPH_INPUT else header.outputs).append(_read_value_info(f, stop))
        f.seek(stop)
    if f.tell() != end:
        raise ValueError("the graph ends mid-field")


def _read_initializer(f: BinaryIO, end: int) -> tuple[str, int, int]:
    """(name, elements, element type number) of a TensorProto, its data skipped."""
    dims, elem, name = [], 1, ""
    for number, wire, value in _fields(f, end):
        if number == 1 and wire == 0:
            dims.append(value)
        elif number == 1 and wire == 2:  # packed dims
            dims += _packed_varints(f.read(value))
        elif number == 2 and wire == 0:
            elem = value
        elif number == 8 and wire == 2:
            name = f.read(value).decode("utf-8", "replace")
        elif wire == 2:
            f.seek(value, 1)
    count = 1
    for d in dims:
        count *= d
    return name, count, elem


def _read_value_info(f: BinaryIO, end: int) -> TensorInfo:
    name, elem, shape = "", "?", ()
    for number, wire, value in _fields(f, end):
        if number == 1 and wire == 2:
            name = f.read(value).decode("utf-8", "replace")
        elif number == 2 and wire == 2:  # TypeProto
            elem, shape = _read_type(f, f.tell() + value)
        elif wire == 2:
            f.seek(value, 1)
    return TensorInfo(name, elem, shape)


def _read_type(f: BinaryIO, end: int) -> tuple[str, tuple]:
    elem, shape = "?", ()
    for number, wire, value in _fields(f, end):
        if number == 1 and wire == 2:  # TypeProto.Tensor
            for n2, w2, v2 in _fields(f, f.tell() + value):
                if n2 == 1 and w2 == 0:
                    elem = ELEM_TYPES.get(v2, ("?", 0))[0]
                elif n2 == 2 and w2 == 2:
                    shape = _read_shape(f, f.tell() + v2)
                elif w2 == 2:
                    f.seek(v2, 1)
        elif wire == 2:
            f.seek(value, 1)
    return elem, shape


def _read_shape(f: BinaryIO, end: int) -> tuple:
    dims = []
    for number, wire, value in _fields(f, end):
        if number == 1 and wire == 2:  # Dimension: dim_value (1) or dim_param (2)
            dim = None
            for n2, w2, v2 in _fields(f, f.tell() + value):
                if n2 == 1 and w2 == 0:
                    dim = v2
                elif n2 == 2 and w2 == 2:
                    dim = f.read(v2).decode("utf-8", "replace")
                elif w2 == 2:
                    f.seek(v2, 1)
            dims.append(dim)
        elif wire == 2:
            f.seek(value, 1)
    return tuple(dims)


def _fields(f: BinaryIO, end: int):
    """(field number, wire type, value) up to `end`; for a length-delimited field the value is its length and the
    file stands at its first byte (the caller reads or seeks past it)."""
    while f.tell() < end:
        key = _varint(f)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("a field numbered 0")
        if wire == 0:
            yield number, wire, _varint(f)
        elif wire == 1:
            f.seek(8, 1)
        elif wire == 5:
            f.seek(4, 1)
        elif wire == 2:
            length = _varint(f)
            if f.tell() + length > end:
                raise ValueError("a field runs past its end (the file is cut short)")
            yield number, wire, length
        else:
            raise ValueError(f"wire type {wire}, which protobuf does not have")
        if f.tell() > end:
            raise ValueError("a field runs past its end (the file is cut short)")


def _varint(f: BinaryIO) -> int:
    result = shift = 0
    while True:
        byte = f.read(1)
        if not byte:
            raise EOFError("the file ends mid-field")
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise ValueError("a varint longer than 10 bytes")


def _packed_varints(data: bytes) -> list[int]:
    out, result, shift = [], 0, 0
    for byte in data:
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            out.append(result)
            result = shift = 0
    return out
