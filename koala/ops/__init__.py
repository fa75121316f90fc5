"""koala.ops."""
