"""GPU telemetry for the node agent: dcgm-exporter or NVML readings joined to pods.

Entry point: :class:`orb8_agent.gpu.collector.GpuCollector`.
"""
