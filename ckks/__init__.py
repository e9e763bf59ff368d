"""A from-scratch RNS-CKKS homomorphic encryption engine on Numba kernels.

Layers: ``ckks.ring`` (primes, samplers) -> ``ckks.rlwe`` (keys, encryption, key switching)
-> ``ckks`` (parameters, encoder, evaluator, serialization, trace).
"""
from kernels import set_num_threads, get_num_threads  # noqa: F401
from .errors import (CKKSError, ContextMismatchError, KeyMissingError, LevelError,  # noqa: F401
                     ScaleMismatchError, SecurityError, SecurityWarning, SerializationError)
from .params import Parameters, MAX_LOG_QP_128  # noqa: F401
from .context import Context  # noqa: F401
from .ciphertext import Ciphertext, Plaintext  # noqa: F401
from .encoder import Encoder  # noqa: F401
from .rlwe.keys import (KeyGenerator, SecretKey, PublicKey, RelinKey, GaloisKeys,  # noqa: F401
                        SwitchingKey, galois_element)
from .rlwe.encryptor import Encryptor  # noqa: F401
from .rlwe.decryptor import Decryptor  # noqa: F401
from .evaluator import Evaluator  # noqa: F401
from .trace import Trace  # noqa: F401
from . import serialization  # noqa: F401
