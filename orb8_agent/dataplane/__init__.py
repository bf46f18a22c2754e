"""The eBPF data plane: load orb8's CO-RE objects, attach them, read their maps."""
