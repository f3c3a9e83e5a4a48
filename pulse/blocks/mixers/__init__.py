"""Sequence mixers other than the PULSE slot family and attention: linear attention, the delta-rule family
(deltanet, gated_deltanet, kda, gated_deltaproduct, rwkv7), SSMs (ssm, mamba2), sparse state attention and NTM
memory. `pulse list --role mixer` gives the registered kinds; pulse/assemble/mixers.py registers them."""
