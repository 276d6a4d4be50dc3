"""HTTP APIs: one error handler, central auth and rate limits, one module per spec section."""
