"""Codecs for split-point tensors: a value transform, optionally followed by compression.

A codec name is ``TRANSFORM[+COMPRESSION]``:

* transforms: ``raw`` (bytes as they are), ``float16`` (alias ``fp16``), ``int8``
  (per-tensor affine uint8, scale/zero_point in the descriptor) and ``int8c``
  (per-channel affine uint8 along axis 1, or 0 for 1-d; the float32 scales and
  uint8 zero points travel in front of the payload so the header stays small);
* compression: ``lz4`` (LZ4 frame format) or ``zstd`` (Zstandard frame), lossless.

``zstd`` alone means ``raw+zstd``. Lossy transforms only apply to floating tensors;
integer and bool tensors silently use ``raw`` (the descriptor names the codec used).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from testbed.transport.protocol import DTYPES, FLOAT_DTYPES, MAX_TENSOR

TRANSFORMS = {"raw": "raw", "none": "raw", "float16": "float16", "fp16": "float16", "half": "float16",
              "int8": "int8", "int8c": "int8c"}
COMPRESSIONS = ("lz4", "zstd")
ZSTD_LEVEL = 3
FLOAT32_MAX = float(np.finfo(np.float32).max)  # int8 scales travel as float32 in decoding


class CodecError(ValueError):
    """Unknown codec name or parameters that do not fit the tensor."""


@dataclass(frozen=True)
class CodecInfo:
    name: str  # canonical: "raw", "float16", "int8+zstd", "raw+lz4", ...
    transform: str
    compression: str | None
    lossy: bool


def codec_info(name: str) -> CodecInfo:
    """Parse a codec name (``"int8+zstd"``, ``"fp16"``, ``"lz4"``) into its canonical parts."""
    if not isinstance(name, str) or not name or len(name) > 32:
        raise CodecError(f"codec name {name!r} is not a short string")
    parts = name.lower().split("+")
    if len(parts) == 1 and parts[0] in COMPRESSIONS:
        parts = ["raw", parts[0]]
    if parts[0] not in TRANSFORMS or len(parts) > 2 or (len(parts) == 2 and parts[1] not in COMPRESSIONS):
        raise CodecError(f"unknown codec {name!r}: use TRANSFORM[+COMPRESSION] with TRANSFORM in "
                         f"raw|float16|int8|int8c and COMPRESSION in lz4|zstd")
    transform = TRANSFORMS[parts[0]]
    compression = parts[1] if len(parts) == 2 else None
    canonical = transform if compression is None else f"{transform}+{compression}"
    return CodecInfo(canonical, transform, compression, transform != "raw")


def available_codecs() -> list[str]:
    return [t if c is None else f"{t}+{c}" for t in ("raw", "float16", "int8", "int8c") for c in (None, *COMPRESSIONS)]


@dataclass
class Encoded:
    """One tensor ready for the wire: its descriptor and a flat byte view of the payload."""

    descriptor: dict
    payload: memoryview  # references the tensor's own buffer when the codec is raw
    raw_nbytes: int  # size of the tensor before encoding
    encode_s: float


def to_numpy(tensor: Any) -> tuple[np.ndarray, str]:
    """A C-contiguous little-endian numpy array and its wire dtype name (copy only if needed)."""
    if not isinstance(tensor, np.ndarray) and type(tensor).__module__.startswith("torch"):
        import torch

        tensor = tensor.detach()
        if tensor.device.type != "cpu":
            tensor = tensor.cpu()
        if tensor.dtype == torch.bfloat16:
            bits = tensor.contiguous().view(torch.int16).numpy()
            return bits, "bfloat16"
        tensor = tensor.contiguous().numpy()
    array = np.asarray(tensor)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    name = {np.dtype(v).str: k for k, v in DTYPES.items() if k != "bfloat16"}.get(array.dtype.str)
    if name is None:
        raise CodecError(f"dtype {array.dtype} is not supported on the wire; use one of {sorted(DTYPES)}")
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array).reshape(array.shape)  # the one copy for strided tensors
    return array, name


def _as_float32(array: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":  # upper 16 bits of a float32
        return (array.astype(np.int32) << 16).view(np.float32).reshape(array.shape)
    return array.astype(np.float32, copy=False)


def _bytes(array: np.ndarray) -> memoryview:
    return memoryview(array.reshape(-1).view(np.uint8))


def _channel_axis(ndim: int) -> int:
    return 1 if ndim >= 2 else 0


def _affine_params(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo = np.minimum(lo, 0.0).astype(np.float64)
    hi = np.maximum(hi, 0.0).astype(np.float64)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise CodecError("int8 codec needs finite values (found inf or nan)")
    scale = (hi - lo) / 255.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    zero_point = np.clip(np.rint(-lo / scale), 0, 255).astype(np.uint8)
    return scale, zero_point


def _quantize(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
    q = np.asarray(np.rint(x / scale))  # 0-d inputs give scalars otherwise
    q += zero_point
    return np.clip(q, 0, 255, out=q).astype(np.uint8)


def encode(tensor: Any, codec: str = "raw", *, name: str = "") -> Encoded:
    """Encode a numpy array or torch tensor; the payload is zero-copy for ``raw``."""
    start = time.perf_counter()
    info = codec_info(codec)
    array, dtype = to_numpy(tensor)
    transform = info.transform if dtype in FLOAT_DTYPES else "raw"
    if transform == "float16" and dtype == "float16":
        transform = "raw"
    if transform == "int8c" and array.ndim == 0:
        transform = "int8"
    params: dict[str, Any] = {}
    if transform == "raw":
        payload_array = array
    elif transform == "float16":
        payload_array = _as_float32(array, dtype).astype(np.float16)
    elif transform == "int8":
        x = _as_float32(array, dtype)
        lo, hi = (x.min(), x.max()) if x.size else (0.0, 0.0)
        scale, zero_point = _affine_params(np.asarray(lo), np.asarray(hi))
        payload_array = _quantize(x, scale, zero_point)
        params = {"scale": float(scale), "zero_point": int(zero_point)}
    else:  # int8c
        x = _as_float32(array, dtype)
        axis = _channel_axis(x.ndim)
        channels = x.shape[axis]
        others = tuple(i for i in range(x.ndim) if i != axis)
        if x.size:
            lo, hi = x.min(axis=others), x.max(axis=others)
        else:
            lo = hi = np.zeros(channels, np.float32)
        scale, zero_point = _affine_params(lo, hi)
        bshape = [1] * x.ndim
        bshape[axis] = channels
        q = _quantize(x, scale.reshape(bshape), zero_point.reshape(bshape))
        payload_array = np.empty(5 * channels + q.size, np.uint8)
        payload_array[: 4 * channels] = scale.astype("<f4").view(np.uint8)
        payload_array[4 * channels : 5 * channels] = zero_point
        payload_array[5 * channels :] = q.reshape(-1)
        params = {"axis": axis}
    payload = _bytes(payload_array)
    used = transform if info.compression is None else f"{transform}+{info.compression}"
    codec_desc: dict[str, Any] = {"name": used, **params}
    if info.compression is not None:
        codec_desc["raw_nbytes"] = len(payload)
        payload = memoryview(_compress(info.compression, payload))
    descriptor = {"name": name, "dtype": dtype, "shape": list(array.shape), "codec": codec_desc,
                  "nbytes": len(payload)}
    return Encoded(descriptor, payload, array.nbytes, time.perf_counter() - start)


def _compress(kind: str, data: memoryview) -> bytes:
    if kind == "lz4":
        import lz4.frame

        return lz4.frame.compress(data, store_size=True)
    import zstandard

    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)


def _decompress(kind: str, data: Any, size: int) -> np.ndarray:
    """Decompress into a fresh buffer of exactly ``size`` bytes (a bomb cannot grow it)."""
    out = np.empty(size, np.uint8)
    if kind == "lz4":
        import lz4.frame

        decompressor = lz4.frame.LZ4FrameDecompressor()
        try:
            raw = decompressor.decompress(memoryview(data), max_length=size)
        except RuntimeError as exc:
            raise ValueError(f"lz4 payload is corrupt: {exc}") from None
        if len(raw) != size or not decompressor.eof:
            raise ValueError(f"lz4 payload does not decompress to raw_nbytes={size}")
        out[:] = np.frombuffer(raw, np.uint8)
        return out
    import zstandard

    try:
        reader = zstandard.ZstdDecompressor().stream_reader(memoryview(data), read_across_frames=False)
        view, got = memoryview(out), 0
        while got < size:
            n = reader.readinto(view[got:])
            if n == 0:
                break
            got += n
        extra = reader.read(1)
    except zstandard.ZstdError as exc:
        raise ValueError(f"zstd payload is corrupt: {exc}") from None
    if got != size or extra:
        raise ValueError(f"zstd payload does not decompress to raw_nbytes={size}")
    return out


def transformed_nbytes(transform: str, dtype: str, shape: list[int], numel: int, axis: int | None) -> int:
    if transform == "raw":
        return numel * DTYPES[dtype].itemsize
    if transform == "float16":
        return numel * 2
    if transform == "int8":
        return numel
    return numel + 5 * shape[axis]  # int8c: scales (f32) + zero points (u8) + values


def validate_codec(desc: dict, numel: int) -> None:
    """Check a descriptor's codec block against its dtype/shape/nbytes (no allocation)."""
    codec = desc.get("codec", {"name": "raw"})
    if not isinstance(codec, dict):
        raise CodecError("codec must be an object")
    info = codec_info(codec.get("name"))
    dtype, shape = desc["dtype"], desc["shape"]
    if info.lossy and dtype not in FLOAT_DTYPES:
        raise CodecError(f"codec {info.name} needs a floating dtype, got {dtype}")
    axis = None
    if info.transform == "int8":
        scale, zero_point = codec.get("scale"), codec.get("zero_point")
        if not (isinstance(scale, (int, float)) and not isinstance(scale, bool) and 0 < scale <= FLOAT32_MAX):
            raise CodecError(f"int8 codec needs a scale in (0, {FLOAT32_MAX:.4g}]")
        if not (isinstance(zero_point, int) and not isinstance(zero_point, bool) and 0 <= zero_point <= 255):
            raise CodecError("int8 codec needs an integer zero_point in 0..255")
    if info.transform == "int8c":
        axis = codec.get("axis")
        if not (isinstance(axis, int) and not isinstance(axis, bool) and 0 <= axis < len(shape)):
            raise CodecError(f"int8c codec needs an axis in 0..{len(shape) - 1}")
    expected = transformed_nbytes(info.transform, dtype, shape, numel, axis)
    if info.compression is None:
        if desc["nbytes"] != expected:
            raise ValueError(f"nbytes={desc['nbytes']} but {dtype}{shape} with codec {info.name} needs {expected}")
    elif codec.get("raw_nbytes") != expected:
        raise ValueError(f"codec.raw_nbytes={codec.get('raw_nbytes')!r} but {dtype}{shape} needs {expected}")
    if expected > MAX_TENSOR:
        raise ValueError(f"decoded size {expected} > {MAX_TENSOR}")


def warm_up() -> None:
    """Import and exercise the lazily loaded codec libraries once (torch for bfloat16, lz4, zstd).

    The first bfloat16 tensor otherwise imports torch inside a request, ~2 s during
    which the server's I/O thread answers nobody; servers call this at start.
    """
    try:
        import torch  # noqa: F401 - optional: bfloat16 needs it, everything else works without
    except ImportError:
        pass
    else:
        bits = np.zeros(1, np.int16)
        decode({"dtype": "bfloat16", "shape": [1], "codec": {"name": "raw"}}, bits)
        encode(decode({"dtype": "bfloat16", "shape": [1], "codec": {"name": "raw"}}, bits), "int8")
    for compression in COMPRESSIONS:
        payload = _compress(compression, memoryview(bytes(8)))
        _decompress(compression, payload, 8)


def _restore(values: np.ndarray, dtype: str) -> Any:
    """float32 values back to the descriptor's dtype (torch tensor for bfloat16)."""
    if dtype == "bfloat16":
        import torch

        # np.ascontiguousarray turns a 0-d array into shape (1,): keep scalars scalar
        return torch.from_numpy(np.require(values, requirements="C").reshape(values.shape)).to(torch.bfloat16)
    return values.astype(DTYPES[dtype], copy=False)


def decode(descriptor: dict, buffer: Any) -> Any:
    """Tensor from a validated descriptor and its wire bytes: numpy array (torch for bfloat16).

    For ``raw`` the result is a view of ``buffer`` (no copy), writable if it is.
    """
    codec = descriptor.get("codec", {"name": "raw"})
    info = codec_info(codec["name"])
    dtype, shape = descriptor["dtype"], tuple(descriptor["shape"])
    data = buffer
    if info.compression is not None:
        data = _decompress(info.compression, buffer, codec["raw_nbytes"])
    if info.transform == "raw":
        values = np.frombuffer(data, DTYPES[dtype]).reshape(shape)
        if dtype == "bfloat16":
            import torch

            if not values.flags.writeable:  # torch refuses read-only memory
                values = values.copy()
            return torch.from_numpy(values).view(torch.bfloat16)
        return values
    if info.transform == "float16":
        return _restore(np.frombuffer(data, np.float16).reshape(shape).astype(np.float32), dtype)
    raw = np.frombuffer(data, np.uint8)
    if info.transform == "int8":
        values = (raw.astype(np.float32) - codec["zero_point"]) * np.float32(codec["scale"])
        return _restore(values.reshape(shape), dtype)
    axis = codec["axis"]
    channels = shape[axis]
    scale = raw[: 4 * channels].copy().view("<f4")
    zero_point = raw[4 * channels : 5 * channels].astype(np.float32)
    bshape = [1] * len(shape)
    bshape[axis] = channels
    q = raw[5 * channels :].reshape(shape).astype(np.float32)
    return _restore((q - zero_point.reshape(bshape)) * scale.reshape(bshape), dtype)
