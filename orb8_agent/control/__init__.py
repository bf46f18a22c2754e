"""The agent's control side: what to probe on this node, attribution, reporting."""
