"""``entropy_al.keyed_mc``: the public import path of keyed MC dropout (:mod:`entropy_al.mc.keyed`)."""

from .mc.keyed import KEYED_MODULES, KeyedMCDropout, UnkeyableDropoutError, keyed_mc_dropout, site_seed

__all__ = ["KEYED_MODULES", "KeyedMCDropout", "UnkeyableDropoutError", "keyed_mc_dropout", "site_seed"]
