"""The orb8 operator: reconciles TraceSession and GpuTelemetry resources."""
