"""The orb8 node agent: loads probes, attributes what they see, reports status."""
