"""Binary codes from logits, and the hashing objectives that train the heads."""
from brcd.hashing import greedyhash  # noqa: F401  (registration)
from brcd.hashing.objectives import OBJECTIVES, bernoulli_kl, create_objective, nt_xent
from brcd.hashing.sign import codes_from_logits, hash_codes

__all__ = ["OBJECTIVES", "bernoulli_kl", "codes_from_logits", "create_objective", "hash_codes", "nt_xent"]
