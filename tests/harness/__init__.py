"""Test harness: a real Peyvand process, a throwaway PostgreSQL cluster, a small client.

Tests talk HTTP to a server running as a separate process, exactly as clients do; the
fixtures wiring these together live in ``tests/conftest.py``.
"""
