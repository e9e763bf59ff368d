"""Framework-neutral layer specs for HE-friendly networks.

Every op here can be evaluated by a CKKS engine: additions, multiplications by
constants and the degree-2 polynomials ``a*x^2 + b*x + c`` / ``x^2``.  Shapes are
per-sample, channels first: (C, H, W) for feature maps, (F,) for vectors.

Each op class is a dataclass whose fields are the node's JSON attributes; it knows
its weight shapes and its output shape.  ``Fire`` and ``DWSep`` are composite blocks
that expand into primitive nodes.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar

__all__ = [
    "LayerError", "Op", "Normalize", "Conv2d", "BatchNorm", "Poly", "Square", "AvgPool",
    "GlobalAvgPool", "Concat", "Linear", "Node", "OPS", "Fire", "DWSep", "ConvBNAct",
    "NAME_RE", "pointwise", "depthwise",
]

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class LayerError(ValueError):
    """Invalid layer attributes or incompatible shapes."""


def _pos_int(name, v):
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise LayerError(f"{name} must be a positive int, got {v!r}")


class Op:
    """Base class: subclasses are dataclasses registered in ``OPS`` by ``op`` name."""

    op: ClassVar[str] = ""
    n_inputs: ClassVar[int | None] = 1  # None: variadic (>= 2)
    linear: ClassVar[bool] = False      # a plaintext-weight linear map (conv, linear)

    def attrs(self) -> dict:
        return asdict(self)

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        return {}

    def out_shape(self, in_shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
        raise NotImplementedError

    def macs(self, in_shapes, out_shape) -> int:
        """Multiply-accumulates per sample (plaintext weights x ciphertext values)."""
        return 0

    def _check_map(self, s, channels=None):
        if len(s) != 3:
            raise LayerError(f"{self.op} expects a (C, H, W) input, got {s}")
        if channels is not None and s[0] != channels:
            raise LayerError(f"{self.op} expects {channels} channels, got {s[0]}")


OPS: dict[str, type[Op]] = {}


def _register(cls):
    OPS[cls.op] = cls
    return cls


@_register
@dataclass(frozen=True)
class Normalize(Op):
    """(x - mean[c]) / std[c] on inputs scaled to [0, 1]: the model's input convention."""

    op: ClassVar[str] = "normalize"
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if not self.mean or len(self.mean) != len(self.std):
            raise LayerError("normalize needs mean and std of equal, non-zero length")
        if not all(math.isfinite(v) for v in self.mean + self.std) or min(self.std) <= 0:
            raise LayerError("normalize mean/std must be finite and std > 0")

    def out_shape(self, in_shapes):
        (s,) = in_shapes
        self._check_map(s, len(self.mean))
        return s

    def attrs(self):
        return {"mean": list(self.mean), "std": list(self.std)}


@_register
@dataclass(frozen=True)
class Conv2d(Op):
    """k x k convolution with zero padding; groups=in=out gives a depthwise conv."""

    op: ClassVar[str] = "conv2d"
    linear: ClassVar[bool] = True
    in_channels: int = 1
    out_channels: int = 1
    kernel_size: int = 3
    stride: int = 1
    padding: int = -1  # -1: "same" padding kernel_size // 2
    groups: int = 1
    bias: bool = True

    def __post_init__(self):
        for n in ("in_channels", "out_channels", "kernel_size", "stride", "groups"):
            _pos_int(n, getattr(self, n))
        if self.padding == -1:
            object.__setattr__(self, "padding", self.kernel_size // 2)
        if isinstance(self.padding, bool) or not isinstance(self.padding, int) or self.padding < 0:
            raise LayerError(f"padding must be an int >= 0, got {self.padding!r}")
        if self.stride not in (1, 2):
            raise LayerError(f"stride must be 1 or 2, got {self.stride}")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise LayerError(f"groups={self.groups} must divide in/out channels "
                             f"{self.in_channels}/{self.out_channels}")
        if not isinstance(self.bias, bool):
            raise LayerError("bias must be a bool")

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.in_channels

    def weight_shapes(self):
        k = self.kernel_size
        w = {"weight": (self.out_channels, self.in_channels // self.groups, k, k)}
        if self.bias:
            w["bias"] = (self.out_channels,)
        return w

    def out_shape(self, in_shapes):
        (s,) = in_shapes
        self._check_map(s, self.in_channels)
        _, h, w = s
        k, p, st = self.kernel_size, self.padding, self.stride
        ho, wo = (h + 2 * p - k) // st + 1, (w + 2 * p - k) // st + 1
        if ho <= 0 or wo <= 0:
            raise LayerError(f"conv2d output would be empty for input {s}")
        return (self.out_channels, ho, wo)

    def macs(self, in_shapes, out_shape):
        c, h, w = out_shape
        return c * h * w * (self.in_channels // self.groups) * self.kernel_size ** 2


def pointwise(cin: int, cout: int, bias: bool = True) -> Conv2d:
    return Conv2d(cin, cout, 1, 1, 0, 1, bias)


def depthwise(channels: int, kernel_size: int = 3, stride: int = 1, bias: bool = True) -> Conv2d:
    return Conv2d(channels, channels, kernel_size, stride, kernel_size // 2, channels, bias)


@_register
@dataclass(frozen=True)
class BatchNorm(Op):
    """Inference batch norm: (x - running_mean) / sqrt(running_var + eps) * weight + bias."""

    op: ClassVar[str] = "batchnorm"
    channels: int = 1
    eps: float = 1e-5

    def __post_init__(self):
        _pos_int("channels", self.channels)
        object.__setattr__(self, "eps", float(self.eps))
        if not (self.eps > 0 and math.isfinite(self.eps)):
            raise LayerError(f"eps must be > 0, got {self.eps}")

    def weight_shapes(self):
        c = (self.channels,)
        return {"weight": c, "bias": c, "running_mean": c, "running_var": c}

    def out_shape(self, in_shapes):
        (s,) = in_shapes
        if len(s) not in (1, 3) or s[0] != self.channels:
            raise LayerError(f"batchnorm expects {self.channels} channels, got {s}")
        return s


@_register
@dataclass(frozen=True)
class Poly(Op):
    """Per-channel polynomial activation a[c]*x^2 + b[c]*x + c[c] (trainable coefficients)."""

    op: ClassVar[str] = "poly"
    channels: int = 1

    def __post_init__(self):
        _pos_int("channels", self.channels)

    def weight_shapes(self):
        c = (self.channels,)
        return {"a": c, "b": c, "c": c}

    def out_shape(self, in_shapes):
        (s,) = in_shapes
        if len(s) not in (1, 3) or s[0] != self.channels:
            raise LayerError(f"poly expects {self.channels} channels, got {s}")
        return s


@_register
@dataclass(frozen=True)
class Square(Op):
    """Plain x^2."""

    op: ClassVar[str] = "square"

    def out_shape(self, in_shapes):
        (s,) = in_shapes
        return s


@_register
@dataclass(frozen=True)
class AvgPool(Op):
    """k x k average pooling with stride k (no padding)."""

    op: ClassVar[str] = "avgpool"
    kernel_size: int = 2

    def __post_init__(self):
        _pos_int("kernel_size", self.kernel_size)

    def out_shape(self, in_shapes):
        (s,) = in_shapes
        self._check_map(s)
        c, h, w = s
        k = self.kernel_size
        if h % k or w % k:
            raise LayerError(f"avgpool {k}x{k} needs H, W divisible by {k}, got {s}")
        return (c, h // k, w // k)


@_register
@dataclass(frozen=True)
class GlobalAvgPool(Op):
    """Mean over H and W: (C, H, W) -> (C,)."""

    op: ClassVar[str] = "global_avgpool"

    def out_shape(self, in_shapes):
        (s,) = in_shapes
        self._check_map(s)
        return (s[0],)


@_register
@dataclass(frozen=True)
class Concat(Op):
    """Channel concatenation of feature maps with equal H, W."""

    op: ClassVar[str] = "concat"
    n_inputs: ClassVar[int | None] = None

    def out_shape(self, in_shapes):
        if len(in_shapes) < 2:
            raise LayerError("concat needs at least two inputs")
        for s in in_shapes:
            self._check_map(s)
            if s[1:] != in_shapes[0][1:]:
                raise LayerError(f"concat inputs differ in H, W: {in_shapes}")
        return (sum(s[0] for s in in_shapes),) + tuple(in_shapes[0][1:])


@_register
@dataclass(frozen=True)
class Linear(Op):
    """Fully connected layer on a (F,) vector."""

    op: ClassVar[str] = "linear"
    linear: ClassVar[bool] = True
    in_features: int = 1
    out_features: int = 1
    bias: bool = True

    def __post_init__(self):
        _pos_int("in_features", self.in_features)
        _pos_int("out_features", self.out_features)
        if not isinstance(self.bias, bool):
            raise LayerError("bias must be a bool")

    def weight_shapes(self):
        w = {"weight": (self.out_features, self.in_features)}
        if self.bias:
            w["bias"] = (self.out_features,)
        return w

    def out_shape(self, in_shapes):
        (s,) = in_shapes
        if s != (self.in_features,):
            raise LayerError(f"linear expects ({self.in_features},), got {s}")
        return (self.out_features,)

    def macs(self, in_shapes, out_shape):
        return self.in_features * self.out_features


def op_from_attrs(op: str, attrs: dict) -> Op:
    """Build an op spec from its JSON name and attributes (raises LayerError)."""
    if op not in OPS:
        raise LayerError(f"unknown op {op!r}; known ops: {sorted(OPS)}")
    cls = OPS[op]
    if not isinstance(attrs, dict):
        raise LayerError(f"attrs of a {op} node must be an object")
    names = {f.name for f in fields(cls)}
    extra = set(attrs) - names
    if extra:
        raise LayerError(f"unknown attributes for {op}: {sorted(extra)}")
    try:
        return cls(**attrs)
    except TypeError as e:
        raise LayerError(f"bad attributes for {op}: {e}") from e


@dataclass(frozen=True)
class Node:
    """One graph node: unique name, op spec and the names of its inputs."""

    name: str
    layer: Op
    inputs: tuple[str, ...] = field(default=())

    def __post_init__(self):
        if not isinstance(self.name, str) or not NAME_RE.match(self.name):
            raise LayerError(f"bad node name {self.name!r} (letters, digits, '_')")
        object.__setattr__(self, "inputs", tuple(self.inputs))
        n = self.layer.n_inputs
        if (n is None and len(self.inputs) < 2) or (n is not None and len(self.inputs) != n):
            raise LayerError(f"node {self.name!r} ({self.layer.op}) has {len(self.inputs)} inputs")

    @property
    def op(self) -> str:
        return self.layer.op


# ---------------------------------------------------------------- composite blocks

def _act_nodes(name: str, x: str, channels: int, act: str) -> list[Node]:
    if act == "poly":
        return [Node(name, Poly(channels), (x,))]
    if act == "square":
        return [Node(name, Square(), (x,))]
    raise LayerError(f"activation must be 'poly' or 'square', got {act!r}")


@dataclass(frozen=True)
class ConvBNAct:
    """conv k x k -> batch norm -> polynomial activation."""

    in_channels: int
    out_channels: int
    kernel_size: int = 3
    stride: int = 1
    groups: int = 1
    act: str | None = "poly"

    @property
    def out_channels_(self):
        return self.out_channels

    def nodes(self, prefix: str, x: str) -> list[Node]:
        conv = Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                      self.kernel_size // 2, self.groups, bias=False)
        out = [Node(f"{prefix}_conv", conv, (x,)),
               Node(f"{prefix}_bn", BatchNorm(self.out_channels), (f"{prefix}_conv",))]
        if self.act is not None:
            out += _act_nodes(f"{prefix}_act", f"{prefix}_bn", self.out_channels, self.act)
        return out


@dataclass(frozen=True)
class Fire:
    """SqueezeNet fire module: squeeze 1x1 -> act -> (expand 1x1 || expand 3x3) -> concat -> act.

    Each convolution is followed by batch norm (folded into the conv for HE).
    """

    in_channels: int
    squeeze: int
    expand1x1: int
    expand3x3: int
    act: str = "poly"

    @property
    def out_channels(self) -> int:
        return self.expand1x1 + self.expand3x3

    def nodes(self, prefix: str, x: str) -> list[Node]:
        p = prefix
        out = ConvBNAct(self.in_channels, self.squeeze, 1, act=self.act).nodes(f"{p}_squeeze", x)
        s = out[-1].name
        out += ConvBNAct(self.squeeze, self.expand1x1, 1, act=None).nodes(f"{p}_expand1", s)
        out += ConvBNAct(self.squeeze, self.expand3x3, 3, act=None).nodes(f"{p}_expand3", s)
        out.append(Node(f"{p}_concat", Concat(), (f"{p}_expand1_bn", f"{p}_expand3_bn")))
        out += _act_nodes(f"{p}_act", f"{p}_concat", self.out_channels, self.act)
        return out


@dataclass(frozen=True)
class DWSep:
    """Depthwise-separable block: depthwise 3x3 (stride s) -> BN -> act -> pointwise -> BN -> act."""

    in_channels: int
    out_channels: int
    stride: int = 1
    act: str = "poly"

    def nodes(self, prefix: str, x: str) -> list[Node]:
        out = ConvBNAct(self.in_channels, self.in_channels, 3, self.stride, self.in_channels,
                        self.act).nodes(f"{prefix}_dw", x)
        out += ConvBNAct(self.in_channels, self.out_channels, 1, act=self.act).nodes(
            f"{prefix}_pw", out[-1].name)
        return out
