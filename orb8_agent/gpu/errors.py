"""Errors of the GPU telemetry sources; all are SourceUnavailableError (retryable)."""

from orb8_common.errors import SourceUnavailableError


class ExporterFormatError(SourceUnavailableError):
    """dcgm-exporter answered, but not with Prometheus text this parser accepts."""


class ExporterFetchError(SourceUnavailableError):
    """dcgm-exporter could not be reached, timed out, or answered with an HTTP error."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        # True when nothing listens at the address: no exporter, rather than a broken one.
        self.unreachable = unreachable


class PodResourcesError(SourceUnavailableError):
    """The kubelet pod-resources socket is missing, refusing, or answered with an error."""


class NvmlUnavailableError(SourceUnavailableError):
    """NVML could not be loaded or initialised on this node."""
