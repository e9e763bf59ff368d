"""RLWE layer: keys, encryption, decryption and hybrid key switching."""
