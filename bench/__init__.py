"""Peyvand against Synapse, side by side: ``python -m bench`` (or ``bench/run``).

- ``run``: the command; starts each server fresh, runs the workloads, prints and saves.
- ``servers``: start and stop Peyvand and Synapse (installing Synapse when missing).
- ``procstat``: RSS and CPU of a server's process tree, read from /proc.
- ``client``: the Client-Server API calls the workloads make (aiohttp, nothing else).
- ``workloads``: the workloads and their sizes; every loop bounded in count and time.
- ``report``: the table, the ratios, the targets and the JSON file.
"""
