"""The one exception tree of orb8.

Every error orb8 raises on purpose derives from :class:`Orb8Error`. Handlers
map ``retryable`` errors to ``kopf.TemporaryError`` and the rest to
``kopf.PermanentError``; the CLI prints ``str(err)`` on one line.
"""


class Orb8Error(Exception):
    """Base of all orb8 errors."""

    retryable: bool = False


class InvalidSpecError(Orb8Error):
    """A resource's spec is invalid and retrying will not help."""


class ClusterUnavailableError(Orb8Error):
    """The Kubernetes API could not be reached or answered with a server error."""

    retryable = True


class ProbeLoadError(Orb8Error):
    """A BPF object could not be loaded or attached."""


class PreflightError(Orb8Error):
    """The node lacks something a probe needs (BTF, bpffs, a capability)."""


class UsageError(Orb8Error):
    """The user passed bad arguments on the command line."""


class SourceUnavailableError(Orb8Error):
    """A telemetry source (DCGM exporter, pod-resources socket, NVML) is unavailable."""

    retryable = True
