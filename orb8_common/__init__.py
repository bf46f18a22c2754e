"""Code shared by the orb8 operator, agent and CLI."""
