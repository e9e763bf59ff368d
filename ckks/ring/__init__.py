"""Ring layer: NTT-friendly primes, RNS bases over Z_q[X]/(X^N+1), and samplers."""
