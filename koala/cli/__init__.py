"""koala.cli."""
