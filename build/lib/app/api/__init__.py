"""HTTP routes (SPEC section 5)."""
