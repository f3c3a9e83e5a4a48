"""The PULSE slot family: router, propagator, the chunk-recurrent base, slot layers, manager, allocator, hierarchy."""
