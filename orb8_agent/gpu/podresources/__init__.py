"""The kubelet pod-resources v1 API: generated messages and orb8's client."""
