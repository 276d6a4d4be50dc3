"""Pure Matrix event semantics: no I/O, no asyncio, no storage."""
