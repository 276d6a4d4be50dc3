"""Server-Server API plumbing: request signing, key ring, server discovery, the signed
HTTP client and the per-destination sender."""
