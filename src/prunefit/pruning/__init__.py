"""Attach gates to stock diffusers UNets, count MACs under gates, materialize and store pruned experts (APTP)."""
