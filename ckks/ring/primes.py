"""Deterministic generation of NTT-friendly primes q = 1 (mod 2N)."""
from sympy import isprime

MAX_PRIME_BITS = 50  # 4q < 2^52: the IFMA and float64-quotient kernels stay exact


def _step_primes(start: int, step: int, lo: int, hi: int, taken: set):
    """Primes p = 1 (mod step) walking from ``start`` by ``step`` while lo <= p < hi."""
    p = start
    while lo <= p < hi:
        if p not in taken and isprime(p):
            yield p
        p += step if step > 0 else step


def largest_primes(bits: int, count: int, n: int, taken=()) -> list:
    """The ``count`` largest primes below 2^bits that are 1 mod 2N and not in ``taken``."""
    _check_bits(bits, n)
    m = 2 * n
    taken = set(taken)
    start = ((1 << bits) - 1) // m * m + 1
    if start >= 1 << bits:
        start -= m
    out = []
    for p in _step_primes(start, -m, 1 << (bits - 1), 1 << bits, taken):
        out.append(p)
        if len(out) == count:
            return out
    raise ValueError(f"only {len(out)} primes of {bits} bits are 1 mod {m}; wanted {count}")


def scale_primes(bits: int, count: int, n: int, taken=()) -> list:
    """``count`` primes as close as possible to 2^bits, alternately above and below it.

    Alternating keeps the product of the primes dropped by successive rescales close to
    2^(bits*count), so the scale stays near 2^bits after each rescale.
    """
    _check_bits(bits, n)
    m = 2 * n
    taken = set(taken)
    target = 1 << bits
    up = _step_primes(target + 1, m, target, 1 << MAX_PRIME_BITS, taken)
    down = _step_primes(target - m + 1, -m, 1 << (bits - 1), target, taken)
    out = []
    use_up = True
    while len(out) < count:
        src = up if use_up else down
        p = next(src, None)
        if p is None:
            p = next(down if use_up else up, None)
            if p is None:
                raise ValueError(f"not enough {bits}-bit primes that are 1 mod {m}")
        out.append(p)
        use_up = not use_up
    return out


def _check_bits(bits: int, n: int) -> None:
    if not 2 <= bits <= MAX_PRIME_BITS:
        raise ValueError(f"prime size must be 2..{MAX_PRIME_BITS} bits, got {bits}")
    if (1 << bits) <= 2 * n:
        raise ValueError(f"{bits}-bit primes cannot be 1 mod 2N = {2 * n}")
