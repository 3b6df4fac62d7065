"""The shared codegen toolkit of the kernel emitters: kernel signatures, loops, loads, FMA, borders."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import llvmlite.ir as ir
import numpy as np

from convc.symbolic import Size

from .sizes import SizeEmitter, frame_layout

I64 = ir.IntType(64)
I1 = ir.IntType(1)
FLOAT_TYPES = {"f32": ir.FloatType(), "f64": ir.DoubleType()}


_CONSTANTS: dict[tuple, ir.Constant] = {}


def constant(type_: ir.Type, value: float | Sequence[float] | None) -> ir.Constant:
    """The constant `value` of `type_` (a list for a vector, None for zeroinitializer), one object per
    distinct constant for the whole process: a constant has no parent and llvmlite caches its text,
    so a constant used a thousand times is formatted once (vector masks and splats were a third of
    the time spent turning a model's modules into IR text)."""
    if isinstance(value, (list, tuple)):
        value_key = tuple(v.hex() if isinstance(v, float) else v for v in value)
    else:
        value_key = value.hex() if isinstance(value, float) else value
    key = (str(type_), value_key)
    found = _CONSTANTS.get(key)
    if found is None:
        if len(_CONSTANTS) > 65536:
            _CONSTANTS.clear()
        found = _CONSTANTS[key] = ir.Constant(type_, list(value) if isinstance(value, tuple) else value)
    return found


def i64(value: int) -> ir.Constant:
    return constant(I64, int(value))


def as_value(value: int | ir.Value) -> ir.Value:
    if isinstance(value, Size):
        raise TypeError(f"symbolic size {value}: convert it with Kernel.value")
    return i64(value) if isinstance(value, int) else value


class Kernel:
    """One kernel function `void name(T* noalias out, T* noalias in0, ..., i64 lo, i64 hi)` and its
    builder. The kernel runs iterations [lo, hi) of its outermost loop (`outer_loop`), so that the
    lowering can split that loop across threads; `extent` is the loop's full trip count. Buffers in
    `host_constants` are arrays the emitter prepared at compile time (packed weights, say): the
    lowering passes them in place of the node's operand at that index, or after the operands.
    Buffers in `scratch` are filled on every call by the `prologue` kernel, which runs first and
    takes the scratch buffers, in index order, then the node's operands at those indexes (those
    the node has): packing at run time what was not a constant. `pack(values)`, where an emitter
    sets it, computes `host_constants` from another node's constant values, so that nodes sharing
    this kernel's code need no emission of their own; `bind(node, in_types)`, where an emitter sets
    it, the host constants that depend on the node's attributes alone (the run-time sizes of a
    body that nodes differing in those share, see kernels.registry).

    Lowered for symbolic sizes (runtime.sizes.symbolic_lowering), the function also takes the
    call's frame, after the buffers: `value` turns a `Size` (a shape's extent, say) into IR read
    from it, and the integer helpers (add, mul, loop, load, ...) take Sizes where they take ints.
    `extent` may then be a Size too."""

    def __init__(self, module: ir.Module, name: str, dtype: str, num_buffers: int,
                 arg_names: Sequence[str] = ()) -> None:
        self.module, self.dtype = module, dtype
        self.ftype = FLOAT_TYPES[dtype]
        self.itemsize = 4 if dtype == "f32" else 8
        self.num_buffers = num_buffers
        self.extent = 1
        self.host_constants: dict[int, np.ndarray] = {}  # buffer index -> array packed on the host
        self.pack: Callable[[list[np.ndarray | None]], dict[int, np.ndarray]] | None = None
        self.bind: Callable[..., dict[int, np.ndarray]] | None = None
        self.scratch: dict[int, int] = {}  # buffer index -> elements of scratch that `prologue` fills
        # host constants that `bind` computes per call's lengths (a symbolic lowering); placeholders here
        self.frame_params: set[int] = set()
        self.prologue: Kernel | None = None
        pointer = self.ftype.as_pointer()
        layout = frame_layout()
        frame = [pointer] if layout is not None else []
        self.function = ir.Function(module, ir.FunctionType(ir.VoidType(), [pointer] * num_buffers + frame + [I64, I64]),
                                    name)
        self.function.linkage = "internal"
        for index, arg in enumerate(self.function.args[:num_buffers + len(frame)]):
            arg.add_attribute("noalias")
            arg.name = arg_names[index] if index < len(arg_names) else f"buf{index}"
        self.function.args[-2].name, self.function.args[-1].name = "lo", "hi"
        self.sizes: SizeEmitter | None = None
        if layout is not None:
            self.function.args[num_buffers].name = "frame"
            self.sizes = SizeEmitter(self.function.append_basic_block("sizes"), self.function.args[num_buffers],
                                     layout)
        self.builder = ir.IRBuilder(self.function.append_basic_block("entry"))

    @property
    def args(self) -> list[ir.Argument]:
        """The buffer arguments."""
        return list(self.function.args[:self.num_buffers])

    def outer_loop(self, extent: int, name: str = "outer"):
        """The kernel's outermost loop over [0, extent), restricted to this call's [lo, hi)."""
        self.extent = extent
        return self.loop(self.function.args[-2], self.function.args[-1], name)

    def finish(self) -> "Kernel":
        self.builder.ret_void()
        if self.sizes is not None:  # the sizes' block runs first, then the code
            self.sizes.close(self.function.blocks[1])
        return self

    def value(self, value: int | Size | ir.Value) -> ir.Value:
        """An i64 of an int, of a symbolic size (read from the frame) or an i64 value itself."""
        if isinstance(value, Size):
            if self.sizes is None:
                raise TypeError(f"symbolic size {value} in a kernel lowered for fixed sizes")
            return self.sizes.value(value)
        return as_value(value)

    # values -------------------------------------------------------------------------------
    def const(self, value: float, like: ir.Value | None = None) -> ir.Constant:
        """A float constant; splatted to a vector where `like` is a vector."""
        if like is not None and isinstance(like.type, ir.VectorType):
            return constant(like.type, [value] * like.type.count)
        return constant(self.ftype, value)

    def load(self, base: ir.Value, index: int | ir.Value) -> ir.Value:
        return self.builder.load(self.builder.gep(base, [self.value(index)], inbounds=True))

    def store(self, value: ir.Value, base: ir.Value, index: int | ir.Value) -> None:
        self.builder.store(value, self.builder.gep(base, [self.value(index)], inbounds=True))

    def offset(self, base: ir.Value, index: int | ir.Value) -> ir.Value:
        return self.builder.gep(base, [self.value(index)], inbounds=True)

    def prefetch(self, base: ir.Value, index: int | ir.Value) -> None:
        """Fetch the line of base[index] into L2 (prefetcht1 on x86); `index` may lie past the
        buffer (a prefetch never faults, and its address is not `inbounds`)."""
        bytes_ = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = self.module.declare_intrinsic("llvm.prefetch", [bytes_], ir.FunctionType(ir.VoidType(), [bytes_, i32, i32, i32]))
        address = self.builder.bitcast(self.builder.gep(base, [self.value(index)]), bytes_)
        self.builder.call(fn, [address, constant(i32, 0), constant(i32, 2), constant(i32, 1)])

    def intrinsic(self, name: str, *args: ir.Value) -> ir.Value:
        """An LLVM intrinsic over scalars or vectors (the type of the first argument)."""
        type_ = args[0].type
        if not isinstance(type_, ir.VectorType):
            fn = self.module.declare_intrinsic(f"llvm.{name}", [type_], ir.FunctionType(type_, [type_] * len(args)))
            return self.builder.call(fn, list(args))
        symbol = f"llvm.{name}.v{type_.count}{'f32' if self.dtype == 'f32' else 'f64'}"
        fn = self.module.globals.get(symbol) or ir.Function(self.module, ir.FunctionType(type_, [type_] * len(args)),
                                                            symbol)
        return self.builder.call(fn, list(args))

    def libm(self, name: str, *args: ir.Value) -> ir.Value:
        """A call of the C library's math function (name + 'f' for float32), lane by lane on vectors."""
        symbol = name + ("f" if self.dtype == "f32" else "")
        fn = self.module.globals.get(symbol)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(self.ftype, [self.ftype] * len(args)), symbol)
        if not isinstance(args[0].type, ir.VectorType):
            return self.builder.call(fn, list(args))
        result = ir.Constant(args[0].type, None)
        for lane in range(args[0].type.count):
            index = ir.Constant(ir.IntType(32), lane)
            value = self.builder.call(fn, [self.builder.extract_element(a, index) for a in args])
            result = self.builder.insert_element(result, value, index)
        return result

    def fma(self, a: ir.Value, b: ir.Value, acc: ir.Value) -> ir.Value:
        """a * b + acc, fusable (llvm.fmuladd)."""
        return self.intrinsic("fmuladd", a, b, acc)

    # vectors ------------------------------------------------------------------------------
    def lookup(self, values: list[int], index: ir.Value) -> ir.Value:
        """values[index] (i64) from a constant table in the module; the value itself where all agree."""
        if len(set(values)) == 1:
            return i64(values[0])
        type_ = ir.ArrayType(I64, len(values))
        table = ir.GlobalVariable(self.module, type_, self.module.get_unique_name(f"{self.function.name}.table"))
        table.global_constant, table.linkage = True, "internal"
        table.initializer = ir.Constant(type_, list(values))
        return self.builder.load(self.builder.gep(table, [i64(0), index], inbounds=True))

    def vector_type(self, lanes: int) -> ir.VectorType:
        return ir.VectorType(self.ftype, lanes)

    def vload(self, base: ir.Value, index: int | ir.Value, lanes: int) -> ir.Value:
        """An unaligned load of `lanes` consecutive elements at base[index]."""
        pointer = self.builder.bitcast(self.offset(base, index), self.vector_type(lanes).as_pointer())
        return self.builder.load(pointer, align=self.itemsize)

    def vstore(self, value: ir.Value, base: ir.Value, index: int | ir.Value) -> None:
        pointer = self.builder.bitcast(self.offset(base, index), value.type.as_pointer())
        self.builder.store(value, pointer, align=self.itemsize)

    def splat(self, scalar: ir.Value, lanes: int) -> ir.Value:
        vector = self.vector_type(lanes)
        undefined = constant(vector, None)
        single = self.builder.insert_element(undefined, scalar, constant(ir.IntType(32), 0))
        return self.builder.shuffle_vector(single, undefined, constant(ir.VectorType(ir.IntType(32), lanes), None))

    def transpose(self, rows: list[ir.Value]) -> list[ir.Value]:
        """The transpose of a square of vectors (n rows of n lanes, n a power of two): log2(n)
        stages, each swapping one bit of the row index with that bit of the lane index by two
        two-source shuffles per pair of rows (n*log2(n) shuffles in all)."""
        n = len(rows)
        rows = list(rows)
        bit = 1
        while bit < n:
            lower = constant(ir.VectorType(ir.IntType(32), n), [j if not j & bit else n + (j ^ bit) for j in range(n)])
            upper = constant(ir.VectorType(ir.IntType(32), n), [j ^ bit if not j & bit else n + j for j in range(n)])
            for i in range(n):
                if not i & bit:
                    a, b = rows[i], rows[i | bit]
                    rows[i] = self.builder.shuffle_vector(a, b, lower)
                    rows[i | bit] = self.builder.shuffle_vector(a, b, upper)
            bit <<= 1
        return rows

    def vstore_prefix(self, value: ir.Value, base: ir.Value, index: int | ir.Value, count: int) -> None:
        """Store the first `count` lanes of a vector at base[index]."""
        if count < value.type.count:
            mask = constant(ir.VectorType(ir.IntType(32), count), list(range(count)))
            value = self.builder.shuffle_vector(value, constant(value.type, None), mask)
        self.vstore(value, base, index)

    def lane_mask(self, first: ir.Value, lanes: int, stop: int | Size | ir.Value, step: int = 1) -> ir.Value:
        """The <lanes x i1> mask of lanes l with 0 <= first + l*step < stop (first an i64)."""
        b, vector = self.builder, ir.VectorType(I64, lanes)
        undefined = constant(vector, None)
        splat_first = b.shuffle_vector(b.insert_element(undefined, first, constant(ir.IntType(32), 0)), undefined,
                                       constant(ir.VectorType(ir.IntType(32), lanes), None))
        index = b.add(splat_first, ir.Constant(vector, [lane * step for lane in range(lanes)]))
        stop = self.value(stop)
        splat_stop = b.shuffle_vector(b.insert_element(undefined, stop, constant(ir.IntType(32), 0)), undefined,
                                      constant(ir.VectorType(ir.IntType(32), lanes), None))
        return b.and_(b.icmp_signed(">=", index, ir.Constant(vector, [0] * lanes)), b.icmp_signed("<", index, splat_stop))

    def _masked(self, kind: str, lanes: int) -> ir.Function:
        vector, mask = self.vector_type(lanes), ir.VectorType(ir.IntType(1), lanes)
        symbol = f"llvm.masked.{kind}.v{lanes}{'f32' if self.dtype == 'f32' else 'f64'}.p0"
        if symbol in self.module.globals:
            return self.module.globals[symbol]
        if kind == "load":
            type_ = ir.FunctionType(vector, [vector.as_pointer(), ir.IntType(32), mask, vector])
        else:
            type_ = ir.FunctionType(ir.VoidType(), [vector, vector.as_pointer(), ir.IntType(32), mask])
        return ir.Function(self.module, type_, symbol)

    def vload_masked(self, base: ir.Value, index: int | ir.Value, lanes: int, mask: ir.Value) -> ir.Value:
        """The lanes of base[index:index+lanes] that `mask` sets, zeros elsewhere; the lanes not
        set are not read (they may lie outside the buffer)."""
        pointer = self.builder.bitcast(self.builder.gep(base, [self.value(index)]), self.vector_type(lanes).as_pointer())
        return self.builder.call(self._masked("load", lanes), [pointer, constant(ir.IntType(32), self.itemsize), mask,
                                                               constant(self.vector_type(lanes), None)])

    def vstore_masked(self, value: ir.Value, base: ir.Value, index: int | ir.Value, mask: ir.Value) -> None:
        """Store the lanes of `value` that `mask` sets at base[index + lane]."""
        lanes = value.type.count
        pointer = self.builder.bitcast(self.builder.gep(base, [self.value(index)]), value.type.as_pointer())
        self.builder.call(self._masked("store", lanes), [value, pointer, constant(ir.IntType(32), self.itemsize), mask])

    def vfma(self, a: ir.Value, b: ir.Value, acc: ir.Value) -> ir.Value:
        """a * b + acc on vectors (llvm.fma: always fused)."""
        return self.intrinsic("fma", a, b, acc)

    def alloca(self, type_: ir.Type, name: str = "") -> ir.Value:
        """A stack slot in the entry block (promoted to registers by LLVM)."""
        with self.builder.goto_entry_block():
            self.builder.position_at_start(self.builder.block)
            return self.builder.alloca(type_, name=name)

    # integer arithmetic on i64 -------------------------------------------------------------
    def add(self, *terms: int | ir.Value) -> ir.Value:
        values = [self.value(t) for t in terms if not (isinstance(t, int) and t == 0)]
        if not values:
            return i64(0)
        total = values[0]
        for value in values[1:]:
            total = self.builder.add(total, value)
        return total

    def mul(self, a: int | ir.Value, b: int | ir.Value) -> ir.Value:
        if isinstance(b, int) and b == 1:
            return self.value(a)
        return self.builder.mul(self.value(a), self.value(b))

    @contextmanager
    def loop(self, start: int | ir.Value, stop: int | ir.Value, name: str = "i") -> Iterator[ir.Value]:
        """for (i = start; i < stop; ++i) — yields i as an i64 value."""
        builder = self.builder
        start, stop = self.value(start), self.value(stop)
        before = builder.block
        header = builder.append_basic_block(f"{name}.header")
        body = builder.append_basic_block(f"{name}.body")
        exit_block = builder.append_basic_block(f"{name}.exit")
        builder.branch(header)
        builder.position_at_end(header)
        index = builder.phi(I64, name=name)
        index.add_incoming(start, before)
        builder.cbranch(builder.icmp_signed("<", index, stop), body, exit_block)
        builder.position_at_end(body)
        yield index
        latch = builder.block
        index.add_incoming(builder.add(index, i64(1)), latch)
        builder.branch(header)
        builder.position_at_end(exit_block)

    def inside(self, index: ir.Value, size: int) -> ir.Value:
        """The i1 test 0 <= index < size."""
        b = self.builder
        return b.and_(b.icmp_signed(">=", index, i64(0)), b.icmp_signed("<", index, self.value(size)))

    @contextmanager
    def when(self, flag: ir.Value | None) -> Iterator[None]:
        """Emit the body under `if flag`, or unconditionally when flag is None."""
        if flag is None:
            yield
        else:
            with self.builder.if_then(flag):
                yield

    def border_index(self, index: ir.Value, size: int, mode: str) -> tuple[ir.Value, ir.Value | None]:
        """Map a padded-axis index to the source index; returns (index, valid).

        valid is None for modes that always read the source (circular, reflect, replicate), and
        an i1 for zeros (the index is then clamped to a safe in-bounds value)."""
        b = self.builder
        below = b.icmp_signed("<", index, i64(0))
        above = b.icmp_signed(">=", index, self.value(size))
        if mode == "zeros":
            valid = b.not_(b.or_(below, above))
            return b.select(valid, index, i64(0)), valid
        if mode == "circular":
            low, high = b.add(index, self.value(size)), b.sub(index, self.value(size))
        elif mode == "reflect":
            low, high = b.neg(index), b.sub(self.value(2 * size - 2), index)
        elif mode == "replicate":
            low, high = i64(0), self.value(size - 1)
        else:
            raise ValueError(f"unknown border mode {mode!r}")
        return b.select(below, low, b.select(above, high, index)), None
