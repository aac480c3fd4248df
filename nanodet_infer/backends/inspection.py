"""Model files inspected before an engine reads them: duplicate metadata keys and unbounded control flow.

Neither ``onnx`` nor an engine is imported. An ``.onnx`` file's ``ModelProto`` is walked in the protobuf
wire format over a read-only memory map: only the fields below are decoded, everything else (initializers,
constant tensors, names) is skipped by its length without being read, and external data files are never
opened. An OpenVINO IR ``.xml`` is streamed through expat with DOCTYPE and entity declarations refused.

ONNX fields walked (field numbers of ``onnx.proto``): ``ModelProto.graph`` (7), ``.metadata_props`` (14,
``StringStringEntryProto`` key 1), ``.functions`` (25, ``FunctionProto.node`` 7); ``GraphProto.node`` (1);
``NodeProto.op_type`` (4), ``.domain`` (7), ``.attribute`` (5, ``AttributeProto.g`` 6 and ``.graphs`` 11,
walked recursively). As in protobuf, a repeated scalar keeps its last value and a repeated message is merged.

The hazards :func:`check_model` refuses:

* a metadata key present more than once: ONNX Runtime keeps the last value and OpenVINO the first, so the
  two engines read different facts from one file (:class:`MetadataError`);
* control flow that can run unboundedly: ONNX ``Loop``, ``Scan`` and any other node carrying a subgraph
  except ``If`` (whose branches run once and are inspected like the main graph), OpenVINO ``Loop`` and
  ``TensorIterator`` layers. A 1 kB ``Loop`` hangs ONNX Runtime at inference and OpenVINO at load, in
  native code that Ctrl-C does not interrupt (:class:`UnsafeModelError`, unless ``allow_control_flow``).
"""

from __future__ import annotations

import mmap
import xml.parsers.expat
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import MetadataError, ModelLoadError, UnsafeModelError

ONNX_CONTROL_FLOW = frozenset({"Loop", "Scan"})
"""Default-domain ONNX ops refused without ``allow_control_flow`` (and any node other than ``If`` with a subgraph)."""
IR_CONTROL_FLOW = frozenset({"Loop", "TensorIterator"})
"""OpenVINO IR layer types refused without ``allow_control_flow``."""
MAX_IR_XML_BYTES = 64 << 20
"""Largest IR ``.xml`` accepted: it describes the graph only (weights live in the ``.bin``); real ones are < 10 MB."""
MAX_NESTING = 64
"""Deepest nesting of protobuf messages / XML elements accepted (real models: about 10)."""
_MAX_STRING = 1 << 20  # longest op type, domain or metadata key decoded
_LEN, _VARINT, _FIXED64, _FIXED32 = 2, 0, 1, 5
_DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class ModelReport:
    """What :func:`inspect_model` found in a model file.

    ``op_types``: ``(domain, op_type)`` of every node, in subgraphs and model-local functions too (ONNX's
    default domain and every IR layer as domain ``""``). ``metadata_keys``: the metadata keys in file order,
    repeats kept (ONNX ``metadata_props``; IR: ``section/key`` under the net's ``rt_info``).
    ``control_flow``: the op types that can run unboundedly, sorted.
    """

    op_types: frozenset[tuple[str, str]]
    metadata_keys: tuple[str, ...]
    control_flow: tuple[str, ...]

    @property
    def duplicate_keys(self) -> tuple[str, ...]:
        """Metadata keys present more than once, in order of first appearance."""
        return tuple(key for key, count in Counter(self.metadata_keys).items() if count > 1)


def check_model(path: str | Path, *, allow_control_flow: bool = False) -> ModelReport:
    """Inspect ``path`` (``.onnx`` or IR ``.xml``) and refuse the hazards listed in the module docstring.

    Raises :class:`ModelLoadError` when the file is not a well-formed model, :class:`MetadataError` for a
    duplicate metadata key and :class:`UnsafeModelError` for control flow unless ``allow_control_flow``.
    """
    path = Path(path)
    report = inspect_model(path)
    if report.duplicate_keys:
        key = report.duplicate_keys[0]
        raise MetadataError(
            f"{path.name!r} has metadata key {key!r} {report.metadata_keys.count(key)} times, and ONNX Runtime and "
            "OpenVINO would read different values; re-export the model so that every key appears once"
        )
    if report.control_flow and not allow_control_flow:
        ops = ", ".join(map(repr, report.control_flow))
        raise UnsafeModelError(
            f"{path.name!r} contains {ops} (control flow that can run without bound and hang the engine); "
            "if you trust this model, pass allow_control_flow=True (CLI: --allow-control-flow)"
        )
    return report


def inspect_model(path: str | Path) -> ModelReport:
    """Read the op types and metadata keys of an ``.onnx`` or IR ``.xml`` file without running an engine.

    Raises :class:`ModelLoadError` when the file cannot be read or is malformed (truncated protobuf, XML that
    is not well-formed or declares a DOCTYPE, nesting deeper than :data:`MAX_NESTING`, an oversized ``.xml``).
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".xml":
            return _inspect_ir(path)
        return _inspect_onnx(path)
    except _Malformed as exc:
        raise ModelLoadError(f"cannot load {str(path)!r}: {exc}; pass an intact model file") from None
    except OSError as exc:
        raise ModelLoadError(f"cannot load {str(path)!r}: {exc.strerror or exc}") from None


class _Malformed(Exception):
    """The file is not a well-formed model (message: what and where)."""


class _Collector:
    """Op types, metadata keys and control-flow ops gathered while walking one file."""

    def __init__(self) -> None:
        self.op_types: set[tuple[str, str]] = set()
        self.keys: list[str] = []
        self.control_flow: set[str] = set()

    def report(self) -> ModelReport:
        return ModelReport(frozenset(self.op_types), tuple(self.keys), tuple(sorted(self.control_flow)))


# ---------------------------------------------------------------------------------------------- ONNX
def _inspect_onnx(path: Path) -> ModelReport:
    found = _Collector()
    with path.open("rb") as f:
        if f.seek(0, 2) == 0:
            raise _Malformed("the file is empty")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            _OnnxWalker(buf, found).model(0, len(buf))
    return found.report()


class _OnnxWalker:
    """Walks the ``ModelProto`` messages that can hold nodes or metadata; see the module docstring."""

    def __init__(self, buf: mmap.mmap, found: _Collector) -> None:
        self.buf = buf
        self.found = found

    def model(self, start: int, end: int) -> None:
        for field, wire, a, b in self.fields(start, end):
            if wire != _LEN:
                continue
            if field == 7:
                self.graph(a, b, 1)
            elif field == 14:
                key = b""
                for sub, sub_wire, c, d in self.fields(a, b):
                    if sub == 1 and sub_wire == _LEN:
                        key = self.string(c, d)
                self.found.keys.append(_text(key))
            elif field == 25:
                self.graph(a, b, 1, node_field=7)

    def graph(self, start: int, end: int, depth: int, node_field: int = 1) -> None:
        """A ``GraphProto`` (nodes in field 1) or a ``FunctionProto`` (``node_field=7``)."""
        if depth > MAX_NESTING:
            raise _Malformed(f"subgraphs nested deeper than {MAX_NESTING} levels at byte {start}")
        for field, wire, a, b in self.fields(start, end):
            if field == node_field and wire == _LEN:
                self.node(a, b, depth)

    def node(self, start: int, end: int, depth: int) -> None:
        op_type = domain = b""
        subgraphs: list[tuple[int, int]] = []
        for field, wire, a, b in self.fields(start, end):
            if wire != _LEN:
                continue
            if field == 4:
                op_type = self.string(a, b)
            elif field == 7:
                domain = self.string(a, b)
            elif field == 5:
                subgraphs += [(c, d) for sub, w, c, d in self.fields(a, b) if sub in (6, 11) and w == _LEN]
        op = (_domain(domain), _text(op_type))
        self.found.op_types.add(op)
        if (op[0] == "" and op[1] in ONNX_CONTROL_FLOW) or (subgraphs and op != ("", "If")):
            self.found.control_flow.add(f"{op[0]}.{op[1]}" if op[0] else op[1])
        for a, b in subgraphs:
            self.graph(a, b, depth + 1)

    def string(self, start: int, end: int) -> bytes:
        if end - start > _MAX_STRING:
            raise _Malformed(f"a name of {end - start} bytes at byte {start}")
        return self.buf[start:end]

    def fields(self, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
        """``(field, wire type, a, b)`` of each field in ``buf[start:end]``: ``(value, 0)`` for a varint,
        else the ``(start, end)`` byte range of the value."""
        pos = start
        while pos < end:
            tag, pos = self.varint(pos, end)
            field, wire = tag >> 3, tag & 7
            if field == 0:
                raise _Malformed(f"field number 0 at byte {pos}")
            if wire == _VARINT:
                value, pos = self.varint(pos, end)
                yield field, wire, value, 0
                continue
            if wire == _LEN:
                size, pos = self.varint(pos, end)
            elif wire in (_FIXED64, _FIXED32):
                size = 8 if wire == _FIXED64 else 4
            else:
                raise _Malformed(f"unsupported protobuf wire type {wire} at byte {pos}")
            if pos + size > end:
                raise _Malformed(f"truncated protobuf: a field of {size} bytes at byte {pos} runs past byte {end}")
            yield field, wire, pos, pos + size
            pos += size

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        result = shift = 0
        while shift < 70:
            if pos >= end:
                raise _Malformed(f"truncated protobuf: a number runs past byte {end}")
            byte = self.buf[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result, pos
            shift += 7
        raise _Malformed(f"a protobuf number longer than 10 bytes at byte {pos}")


def _domain(raw: bytes) -> str:
    domain = _text(raw)
    return "" if domain in _DEFAULT_DOMAINS else domain


def _text(raw: bytes) -> str:
    """A protobuf string as text; bytes that are not UTF-8 (protobuf 2 allows them) stay distinct as surrogates."""
    return raw.decode("utf-8", "surrogateescape")


# ---------------------------------------------------------------------------------------------- IR
def _inspect_ir(path: Path) -> ModelReport:
    size = path.stat().st_size
    if size > MAX_IR_XML_BYTES:
        raise _Malformed(
            f"the IR .xml is {size >> 20} MiB, above the {MAX_IR_XML_BYTES >> 20} MiB an IR graph description needs "
            "(weights live in the .bin)"
        )
    found = _Collector()
    walker = _IrWalker(found)
    parser = xml.parsers.expat.ParserCreate()
    parser.StartDoctypeDeclHandler = walker.refuse_doctype
    parser.EntityDeclHandler = walker.refuse_doctype
    parser.StartElementHandler = walker.start
    parser.EndElementHandler = walker.end
    try:
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                parser.Parse(chunk, False)
            parser.Parse(b"", True)
    except xml.parsers.expat.ExpatError as exc:
        reason = xml.parsers.expat.ErrorString(exc.code)
        raise _Malformed(f"the IR .xml is not well-formed ({reason} at line {exc.lineno})") from None
    return found.report()


class _IrWalker:
    """expat handlers: layer types at any depth, and ``section/key`` paths under ``<net><rt_info>``.

    An rt_info key is an element's tag, or its ``name`` attribute for ``<info name=... value=...>`` (how
    OpenVINO writes keys that are not XML names).
    """

    def __init__(self, found: _Collector) -> None:
        self.found = found
        self.stack: list[str] = []  # rt_info path of each open element ("" outside the net's rt_info)

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        if len(self.stack) >= MAX_NESTING:
            raise _Malformed(f"XML elements nested deeper than {MAX_NESTING} levels")
        path = ""
        if len(self.stack) == 1 and tag == "rt_info":
            path = "/"
        elif self.stack and self.stack[-1]:
            key = attrs.get("name", tag) if tag == "info" else tag
            path = f"{self.stack[-1].strip('/')}/{key}".lstrip("/")
            self.found.keys.append(path)
        elif tag == "layer" and "type" in attrs:
            self.found.op_types.add(("", attrs["type"]))
            if attrs["type"] in IR_CONTROL_FLOW:
                self.found.control_flow.add(attrs["type"])
        self.stack.append(path)

    def end(self, tag: str) -> None:
        self.stack.pop()

    def refuse_doctype(self, *args: object) -> None:
        raise _Malformed("the IR .xml declares a DOCTYPE or entities, which OpenVINO never writes")
