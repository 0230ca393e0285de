"""local_dev: the pipeline's stages on this machine's GPUs (or CPU workers), as processes or containers.

What `make run` runs, at this level: gpus.py (NVML scan, worker plan), worker.py (the worker process),
pool.py (the Runner adapter) with pool_calls.py (its records), scheduler.py (dispatch and batching),
supervisor.py (restart + retry), wire.py (messages), launchers.py (processes, external workers),
docker_launcher.py (containers, compose), pool_stats.py and settings.py (the pool's settings),
__main__.py (`python -m local_dev serve`). Beside it, never imported by it: bench/ (`make bench`,
`make bench-long`, `make bench-stream`) and eval/ (`make eval`, `make eval-live`). Imports stay lazy:
worker processes import this package first.
"""
