"""The orb8 command line (also installed as the kubectl plugin kubectl-orb8)."""
