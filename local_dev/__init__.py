"""local_dev: the pipeline's stages on this machine's GPUs (or CPU workers), as processes or containers.

gpus.py (NVML scan, worker plan), worker.py (the worker process), pool.py (the Runner adapter) with
scheduler.py (dispatch and batching decisions), supervisor.py (restart + retry), wire.py (messages),
launchers.py, pool_stats.py and settings.py (the pool's settings), docker_runner.py (containers,
compose), __main__.py (`python -m local_dev serve`). Imports stay lazy: worker processes import this
package first.
"""
