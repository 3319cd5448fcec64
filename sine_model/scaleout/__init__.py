"""Runs at scale: resumable propagation into OME-Zarr, in this process or on a dask.distributed cluster.

Layer 6 (beside ``fitting``): it uses the engine (resumable runs, reference state) and the hub (loading
weights by name or path plus sha256 on the workers), takes an already prepared propagator, and is used by
the command line.
"""
