"""The forms of the math ops and activations (exp, sin, cos, sqrt, rsqrt, reciprocal, neg, abs,
pow, gelu, silu, tanh, hardswish, hardsigmoid, leaky_relu, hardtanh, clamp): each builds its op on a
scalar or on a vector of any width, so the elementwise kernel's loop vectorizes and the conv
epilogues apply the activations to whole accumulator vectors. An op's attributes come as keyword
arguments (`form(k, [x], negative_slope=0.1)`).

exp, tanh and the normal distribution function behind gelu are computed inline by range reduction and
polynomials (below), not by calls into the C library: a call per lane would keep LLVM from
vectorizing the elementwise loop and, in a conv epilogue, spill the accumulators around every
call; so are sin and cos (TRIG_PIO2 below), but for arguments past 2^19, which take the C
library's in a branch of their own. pow with an array or a general exponent calls the C
library, lane by lane.
Values follow torch: its formulas (silu = x / (1 + exp(-x)), hardswish = x * clamp(x + 3, 0, 6)
/ 6), its special exponents of pow, NaN kept by clamps and ReLU-like selects, signed zeros kept.
"""
from __future__ import annotations

import math
from typing import Callable

import llvmlite.ir as ir

from ..codegen import Kernel, constant

MathForm = Callable[..., ir.Value]

# exp(r) = 1 + r + r^2 * P(r) for |r| <= ln(2)/2: interpolants of (exp(r) - 1 - r) / r^2 at
# Chebyshev nodes (within 0.51 ulp before the final rounding)
EXP_POLY = {
    "f32": (0.5, 0.1666666716337204, 0.041666463017463684, 0.00833331048488617, 0.0013933731243014336,
            0.000198910798644647),
    "f64": (0.5, 0.16666666666666666, 0.04166666666666668, 0.008333333333333333, 0.0013888888888879004,
            0.00019841269841263252, 2.480158733663095e-05, 2.7557319247344507e-06, 2.755726307730941e-07,
            2.5052070959803662e-08, 2.091821231913398e-09, 1.6086677666787362e-10),
}
# tanh x = x + x^3 P(x^2) for |x| < TANH_SMALL: least-squares fits of (tanh x - x) / x^3 in x^2 at
# Chebyshev nodes, weighted to tanh's relative error (float32 within 0.67 ulp, float64 1.0 ulp)
TANH_SMALL = 0.625
TANH_POLY = {
    "f32": (-0.33333330657613874, 0.13333201343463463, -0.05394625284573027, 0.021698209512501083,
            -0.008171788734756828, 0.002138226283025364),
    "f64": (-0.3333333333333331, 0.1333333333332956, -0.05396825396597309, 0.021869488466646964,
            -0.00886323428311881, 0.0035921137331605467, -0.0014557243543466927, 0.0005894454319946284,
            -0.00023699489817603303, 9.153014916229132e-05, -3.0159923691669275e-05, 6.030921439640456e-06),
}
LN2_HI = {"f32": 0.693359375, "f64": 0.6931471803691238}  # ln 2 in few bits: n * LN2_HI is exact
LN2_LO = {"f32": -2.1219444005469057e-04, "f64": 1.9082149292705877e-10}  # ln 2 - LN2_HI
# exp's argument is clamped to where its result is 0 or inf, so that 2^n stays two normal factors
EXP_RANGE = {"f32": (-104.0, 89.0), "f64": (-746.0, 710.0)}
FLOAT_BITS = {"f32": (32, 23, 127), "f64": (64, 52, 1023)}  # width, mantissa bits, exponent bias

# The upper tail of the standard normal distribution, Q(u) = erfc(u / sqrt(2)) / 2 for u >= 0, as
# Q(u) = exp(-u^2 / 2) * P(t) with t = c / (c + u): P interpolates Q(u) * exp(u^2 / 2) at
# Chebyshev nodes of t in [c / (c + U), 1] (within 3 ulp, the rounding of t included). Past U the
# factor exp(-u^2 / 2) is 0 in the dtype, so u is clamped to U.
NORMAL_TAIL = {
    "f32": (4.0, 14.5, (-1.4299099348136224e-05, 0.10006248205900192, 0.09647990763187408, 0.11205652356147766,
                        0.014307226054370403, 0.22035114467144012, -0.19601164758205414, 0.24551469087600708,
                        -0.09250820428133011, -0.007503723260015249, 0.007265898864716291)),
    "f64": (5.0, 38.7, (-1.199056592654554e-12, 0.07978845616719914, 0.07978845314455439, 0.07659697931772425,
                        0.07021294537420154, 0.06103187910467481, 0.0497077591108347, 0.03810876154302541,
                        0.022876227595831057, 0.026869389850749225, -0.034094549166965644, 0.11893041554345155,
                        -0.27810026596904747, 0.5337041476009391, -0.8481019107277687, 1.0831737324512665,
                        -1.1052619560567394, 0.880729583390135, -0.5283581978519172, 0.22841792603789127,
                        -0.06696849522255198, 0.011923895844763905, -0.0009751770810523875)),
}
# sin and cos: x = j pi/2 + r, |r| <= pi/4, by pi/2 in pieces (Cody-Waite with fused multiply-adds:
# the first piece is pi/2 rounded, so x - j * piece is exact; each later step rounds once,
# relative to the reduced value itself, so r keeps full precision near the zeros of sin); then
# sin(r) = r + r^3 S(r^2), cos(r) = 1 - r^2/2 + r^4 C(r^2), and the quadrant j mod 4 picks and
# signs one of them. float64: fdlibm's 33-bit pieces and kernels (within 1 ulp on [-pi/4, pi/4]);
# float32: its own pieces and Cephes's kernels (1.54 ulp at most, measured from -2^19 to 2^19 and
# next to multiples of pi). Past TRIG_LIMIT the reduction would lose bits: those lanes (and the
# infinities) take the C library's function in a branch taken only where a vector holds one.
TRIG_PIO2 = (1.57079632673412561417e+00, 6.07710050630396597660e-11, 2.02226624871116645580e-21,
             8.47842766036889956997e-32)
TRIG_SIN = (-1.66666666666666324348e-01, 8.33333333332248946124e-03, -1.98412698298579493134e-04,
            2.75573137070700676789e-06, -2.50507602534068634195e-08, 1.58969099521155010221e-10)
TRIG_COS = (4.16666666666666019037e-02, -1.38888888888741095749e-03, 2.48015872894767294178e-05,
            -2.75573143513906633035e-07, 2.08757232129817482790e-09, -1.13596475577881948265e-11)
TRIG_PIO2_F32 = (1.5707963705062866, -4.371138828673793e-08, -1.7151245100058819e-15)
TRIG_SIN_F32 = (-1.6666654611e-1, 8.3321608736e-3, -1.9515295891e-4)
TRIG_COS_F32 = (4.166664568298827e-2, -1.388731625493765e-3, 2.443315711809948e-5)
TRIG_LIMIT = 2.0 ** 19
GELU_TANH_A = -2.0 * math.sqrt(2.0 / math.pi)  # -2u = x * (A + B x^2), u = sqrt(2/pi) (x + 0.044715 x^3)
GELU_TANH_B = GELU_TANH_A * 0.044715


def polynomial(k: Kernel, x: ir.Value, coefficients: tuple[float, ...]) -> ir.Value:
    """sum(c_i x^i) by Horner's rule (fused multiply-adds)."""
    acc = k.const(coefficients[-1], x)
    for c in coefficients[-2::-1]:
        acc = k.fma(acc, x, k.const(c, x))
    return acc


def _constant(type_: ir.Type, value: float) -> ir.Constant:
    """`value` of a scalar type, or splatted over a vector type."""
    return constant(type_, [value] * type_.count if isinstance(type_, ir.VectorType) else value)


def _int_type(k: Kernel, like: ir.Value) -> ir.Type:
    scalar = ir.IntType(FLOAT_BITS[k.dtype][0])
    return ir.VectorType(scalar, like.type.count) if isinstance(like.type, ir.VectorType) else scalar


def _power_of_two(k: Kernel, n: ir.Value, like: ir.Value) -> ir.Value:
    """2^n for integer n within the normal exponents, built from its bits."""
    _, mantissa, bias = FLOAT_BITS[k.dtype]
    b = k.builder
    return b.bitcast(b.shl(b.add(n, _constant(n.type, bias)), _constant(n.type, mantissa)), like.type)


def exp(k: Kernel, x: ir.Value) -> ir.Value:
    """e^x: x = n ln2 + r (Cody-Waite, |r| <= ln2/2), e^r by a polynomial, times 2^n as two
    factors (so results that are subnormal or overflow come out right); NaN stays NaN."""
    b = k.builder
    low, high = EXP_RANGE[k.dtype]
    clamped = k.intrinsic("minnum", k.intrinsic("maxnum", x, k.const(low, x)), k.const(high, x))
    n = k.intrinsic("rint", b.fmul(clamped, k.const(1 / math.log(2), x)))
    r = k.intrinsic("fma", n, k.const(-LN2_HI[k.dtype], x), clamped)
    r = k.intrinsic("fma", n, k.const(-LN2_LO[k.dtype], x), r)
    p = b.fadd(k.const(1.0, x), k.fma(b.fmul(r, r), polynomial(k, r, EXP_POLY[k.dtype]), r))
    itype = _int_type(k, x)
    whole = b.fptosi(n, itype)
    half = b.ashr(whole, _constant(itype, 1))
    y = b.fmul(b.fmul(p, _power_of_two(k, half, x)), _power_of_two(k, b.sub(whole, half), x))
    return b.select(b.fcmp_unordered("uno", x, x), x, y)


def normal_tail(k: Kernel, x: ir.Value) -> tuple[ir.Value, ir.Value]:
    """(factor, gauss) with factor * gauss = Q(|x|) = P(X > |x|) for a standard normal X, i.e.
    erfc(|x| / sqrt(2)) / 2: gauss = exp(-u^2 / 2) (taken at the rounded square hi = u*u, the
    factor corrects it by the square's rounding error lo), factor the polynomial in t. Kept apart
    so that a caller multiplies by gauss last: in the far tail gauss alone is subnormal."""
    b = k.builder
    c, limit, coefficients = NORMAL_TAIL[k.dtype]
    u = k.intrinsic("minnum", k.intrinsic("fabs", x), k.const(limit, x))
    hi = b.fmul(u, u)
    lo = k.intrinsic("fma", u, u, b.fneg(hi))
    t = b.fdiv(k.const(c, x), b.fadd(k.const(c, x), u))
    factor = b.fmul(polynomial(k, t, coefficients), b.fsub(k.const(1.0, x), b.fmul(lo, k.const(0.5, x))))
    return factor, exp(k, b.fmul(hi, k.const(-0.5, x)))


def _clamp(k: Kernel, x: ir.Value, low: float | None, high: float | None) -> ir.Value:
    """min(max(x, low), high) as torch.clamp: NaN stays NaN, a NaN bound makes every value NaN,
    a zero keeps its sign where it equals a bound."""
    b = k.builder
    for bound, above in ((low, False), (high, True)):
        if bound is None:
            continue
        if math.isnan(bound):
            return b.fadd(x, k.const(math.nan, x))
        limit = k.const(bound, x)
        x = b.select(b.fcmp_ordered(">" if above else "<", x, limit), limit, x)
    return x


def _gelu(k: Kernel, v: list[ir.Value], approximate: str) -> ir.Value:
    """x * P(X <= x) for a standard normal X (x * (1 + erf(x / sqrt(2))) / 2): x * Q(|x|) for x < 0
    and x * (1 - Q(|x|)) otherwise, never a difference of nearly equal values. With
    approximate='tanh', 0.5 x (1 + tanh(u)), written as x / (1 + exp(-2u)) for the same reason."""
    b, x = k.builder, v[0]
    if approximate == "tanh":
        square = b.fmul(x, x)
        minus_2u = b.fmul(x, k.fma(k.const(GELU_TANH_B, x), square, k.const(GELU_TANH_A, x)))
        return b.fdiv(x, b.fadd(k.const(1.0, x), exp(k, minus_2u)))
    factor, gauss = normal_tail(k, x)
    lower = b.fmul(b.fmul(x, factor), gauss)
    upper = b.fmul(x, b.fsub(k.const(1.0, x), b.fmul(factor, gauss)))
    return b.select(b.fcmp_ordered("<", x, k.const(0.0, x)), lower, upper)


def _tanh(k: Kernel, v: list[ir.Value]) -> ir.Value:
    """tanh x: x + x^3 P(x^2) for |x| < TANH_SMALL, 1 - 2 / (e^(2|x|) + 1) beyond (no cancellation
    there: the result is above 0.55), the sign of x copied on (so -0 stays -0); NaN stays NaN."""
    b, x = k.builder, v[0]
    magnitude = k.intrinsic("fabs", x)
    square = b.fmul(x, x)
    small = k.fma(b.fmul(x, square), polynomial(k, square, TANH_POLY[k.dtype]), x)
    one = k.const(1.0, x)
    large = b.fsub(one, b.fdiv(k.const(2.0, x), b.fadd(exp(k, b.fadd(magnitude, magnitude)), one)))
    result = b.select(b.fcmp_ordered("<", magnitude, k.const(TANH_SMALL, x)), small, large)
    return k.intrinsic("copysign", result, x)


def _silu(k: Kernel, v: list[ir.Value]) -> ir.Value:
    b = k.builder
    return b.fdiv(v[0], b.fadd(k.const(1.0, v[0]), exp(k, b.fneg(v[0]))))


def _hardsigmoid(k: Kernel, v: list[ir.Value]) -> ir.Value:
    b = k.builder
    return b.fdiv(_clamp(k, b.fadd(v[0], k.const(3.0, v[0])), 0.0, 6.0), k.const(6.0, v[0]))


def _hardswish(k: Kernel, v: list[ir.Value]) -> ir.Value:
    b = k.builder
    return b.fdiv(b.fmul(v[0], _clamp(k, b.fadd(v[0], k.const(3.0, v[0])), 0.0, 6.0)), k.const(6.0, v[0]))


def _leaky_relu(k: Kernel, v: list[ir.Value], negative_slope: float) -> ir.Value:
    b, x = k.builder, v[0]
    return b.select(b.fcmp_ordered(">", x, k.const(0.0, x)), x, b.fmul(x, k.const(negative_slope, x)))


def _hardtanh(k: Kernel, v: list[ir.Value], min_val: float, max_val: float) -> ir.Value:
    return _clamp(k, v[0], min_val, max_val)


def _clamp_op(k: Kernel, v: list[ir.Value], **bounds: float | None) -> ir.Value:
    return _clamp(k, v[0], bounds["min"], bounds["max"])


def _reciprocal(k: Kernel, x: ir.Value) -> ir.Value:
    return k.builder.fdiv(k.const(1.0, x), x)


def _any(k: Kernel, flags: ir.Value) -> ir.Value:
    """Whether any lane of an i1 vector (or the i1 itself) is set."""
    if not isinstance(flags.type, ir.VectorType):
        return flags
    bits = k.builder.bitcast(flags, ir.IntType(flags.type.count))
    return k.builder.icmp_unsigned("!=", bits, ir.Constant(bits.type, 0))


def sin_cos(k: Kernel, x: ir.Value, cos: bool) -> ir.Value:
    """sin(x) or cos(x) inline (see TRIG_PIO2); lanes past TRIG_LIMIT through the C library."""
    b = k.builder
    vector = isinstance(x.type, ir.VectorType)
    count = x.type.count if vector else 1
    single = k.dtype == "f32"
    magnitude = k.intrinsic("fabs", x)
    reducible = b.fcmp_ordered("<=", magnitude, k.const(TRIG_LIMIT, x))
    j = k.intrinsic("rint", b.fmul(x, k.const(2 / math.pi, x)))
    j = b.select(reducible, j, k.const(0.0, x))  # NaN and far lanes: a defined quadrant
    r = x
    for piece in TRIG_PIO2_F32 if single else TRIG_PIO2:
        r = k.intrinsic("fma", b.fneg(j), k.const(piece, x), r)
    z = b.fmul(r, r)
    if single:
        sine = k.intrinsic("fma", b.fmul(r, z), polynomial(k, z, TRIG_SIN_F32), r)
        cosine = k.intrinsic("fma", b.fmul(z, z), polynomial(k, z, TRIG_COS_F32),
                             k.intrinsic("fma", z, k.const(-0.5, x), k.const(1.0, x)))
    else:
        sine = b.fadd(r, b.fmul(b.fmul(z, r), polynomial(k, z, TRIG_SIN)))
        half = b.fmul(z, k.const(0.5, x))
        one = k.const(1.0, x)
        head = b.fsub(one, half)
        tail = b.fadd(b.fsub(b.fsub(one, head), half), b.fmul(b.fmul(z, z), polynomial(k, z, TRIG_COS)))
        cosine = b.fadd(head, tail)
    scalar_int = ir.IntType(32)
    itype = ir.VectorType(scalar_int, count) if vector else scalar_int

    def ints(value: int) -> ir.Constant:
        return _constant(itype, value)

    quadrant = b.add(b.fptosi(j, itype), ints(1 if cos else 0))
    value = b.select(b.icmp_signed("!=", b.and_(quadrant, ints(1)), ints(0)), cosine, sine)
    value = b.select(b.icmp_signed("!=", b.and_(quadrant, ints(2)), ints(0)), b.fneg(value), value)
    if not cos:  # sin(-0) = -0
        value = b.select(b.fcmp_ordered("==", x, k.const(0.0, x)), x, value)
    far = b.fcmp_ordered(">", magnitude, k.const(TRIG_LIMIT, x))
    start = b.block
    with b.if_then(_any(k, far), likely=False):
        slow = k.libm("cos" if cos else "sin", x)
        slow_block = b.block
    result = b.phi(x.type)
    result.add_incoming(value, start)
    result.add_incoming(slow, slow_block)
    return result


def _pow_scalar(k: Kernel, v: list[ir.Value], exponent: float) -> ir.Value:
    """x ** exponent with torch's special exponents: 0 -> 1, 1 -> x, 2 -> x*x, 3 -> x*x*x,
    0.5 -> sqrt, -0.5 -> 1/sqrt, -1 -> 1/x, -2 -> 1/(x*x); the C library's pow otherwise, in
    float64 for float32 data (the exponent is a Python float: 1/3 stays 1/3, not its float32)."""
    b, x = k.builder, v[0]
    if exponent == 0:
        return k.const(1.0, x)
    if exponent == 1:
        return x
    if exponent in (2, 3, -2):
        square = b.fmul(x, x)
        return b.fmul(square, x) if exponent == 3 else square if exponent == 2 else _reciprocal(k, square)
    if exponent in (0.5, -0.5):
        root = k.intrinsic("sqrt", x)
        return root if exponent > 0 else _reciprocal(k, root)
    if exponent == -1:
        return _reciprocal(k, x)
    if k.dtype == "f64":
        return k.intrinsic("pow", x, k.const(exponent, x))
    # float32: the exponent as given (a double), so float64's pow, rounded once
    wide = ir.DoubleType()
    wide = ir.VectorType(wide, x.type.count) if isinstance(x.type, ir.VectorType) else wide
    power = _typed_intrinsic(k, "pow", b.fpext(x, wide), _constant(wide, exponent))
    return b.fptrunc(power, x.type)


def _typed_intrinsic(k: Kernel, name: str, *args: ir.Value) -> ir.Value:
    """An LLVM intrinsic named after its operands' own type (which may be wider than the kernel's)."""
    type_ = args[0].type
    element = type_.element if isinstance(type_, ir.VectorType) else type_
    suffix = "f32" if isinstance(element, ir.FloatType) else "f64"
    symbol = f"llvm.{name}.v{type_.count}{suffix}" if isinstance(type_, ir.VectorType) else f"llvm.{name}.{suffix}"
    function = k.module.globals.get(symbol) or ir.Function(k.module, ir.FunctionType(type_, [type_] * len(args)),
                                                          symbol)
    return k.builder.call(function, list(args))


MATH_FORMS: dict[str, MathForm] = {
    "exp": lambda k, v: exp(k, v[0]),
    "sin": lambda k, v: sin_cos(k, v[0], False),
    "cos": lambda k, v: sin_cos(k, v[0], True),
    "sqrt": lambda k, v: k.intrinsic("sqrt", v[0]),
    "rsqrt": lambda k, v: _reciprocal(k, k.intrinsic("sqrt", v[0])),
    "reciprocal": lambda k, v: _reciprocal(k, v[0]),
    "neg": lambda k, v: k.builder.fneg(v[0]),
    "abs": lambda k, v: k.intrinsic("fabs", v[0]),
    "pow": lambda k, v: k.intrinsic("pow", v[0], v[1]),
    "pow_scalar": _pow_scalar,
    "gelu": _gelu,
    "silu": _silu,
    "tanh": _tanh,
    "hardswish": _hardswish,
    "hardsigmoid": _hardsigmoid,
    "leaky_relu": _leaky_relu,
    "hardtanh": _hardtanh,
    "clamp": _clamp_op,
}
