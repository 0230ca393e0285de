"""python -m local_dev {serve,worker,devices,compose}

    serve [--docker] [--workers N]     the API on a pool of worker processes (or containers)
    serve --external-workers N         the API waiting for N workers started elsewhere (docker compose)
    worker --connect HOST:PORT --id N  one worker (what the pool spawns, and a container's command)
    devices                            what NVML finds and which worker goes where
    compose [--gpus N]                 print the docker-compose file for N GPUs

Keep the imports at the top light: the 'spawn' start method imports this module again in every
worker process before the device pin is re-checked.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys

from shared.pipeline.stages import Role


def _settings(args: argparse.Namespace):
    from shared.core.config import Settings

    update = {}
    if getattr(args, "host", None):
        update["host"] = args.host
    if getattr(args, "port", None):
        update["port"] = args.port
    settings = Settings()
    return settings.model_copy(update=update) if update else settings


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from local_dev.pool import serving_pool
    from shared.api.auth import ConfigurationError
    from shared.api.serving import uvicorn_options

    settings = _settings(args)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        options = uvicorn_options(settings)  # before any worker starts: an open bind without keys is refused
    except ConfigurationError as exc:
        print(f"local_dev: not starting: {exc}", file=sys.stderr)
        return 2
    pool = serving_pool(settings, docker=args.docker, workers=args.workers, external=args.external_workers,
                        listen_host=args.listen, build=False)
    try:
        print(f"local_dev: {pool.launcher.name} workers connect to {pool.address[0]}:{pool.address[1]}",
              file=sys.stderr)
        if args.docker and not args.no_build:
            try:
                pool.launcher.build()
            except (OSError, subprocess.CalledProcessError) as exc:
                print(f"local_dev: docker build failed ({exc}); is the Docker engine running?", file=sys.stderr)
                return 1
        try:
            pool.start(wait=True, timeout=args.start_timeout)
        except (RuntimeError, TimeoutError) as exc:
            print(f"local_dev: the workers did not start: {exc}", file=sys.stderr)
            return 1
        for row in pool.stats()["workers"]:
            print(f"local_dev: worker {row['worker']} on {row['device']} serves {','.join(row['stages'])} "
                  f"({row['process']})", file=sys.stderr)
        try:
            from shared.api.app import create_app
        except ImportError as exc:
            print(f"local_dev: shared.api.app is not available ({exc})", file=sys.stderr)
            return 2
        try:
            app = create_app(settings=settings, runner=pool)
        except ConfigurationError as exc:
            print(f"local_dev: not starting: {exc}", file=sys.stderr)
            return 2
        uvicorn.run(app, **options)
    finally:
        pool.close()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from local_dev.worker import serve

    host, _, port = args.connect.rpartition(":")
    authkey = os.environ.get("WORKER_AUTHKEY")
    if not authkey:
        print("WORKER_AUTHKEY is not set", file=sys.stderr)
        return 2
    info = {"launcher": "container" if os.path.exists("/.dockerenv") else "cli", "role": args.role}
    info.update(_visible_gpu(args.gpu_index))
    serve((host, int(port)), authkey.encode(), args.id, info=info, connect_timeout=args.connect_timeout)
    return 0


def _visible_gpu(gpu_index: int | None) -> dict:
    """What this worker sees (inside a container: the one GPU it was given, as index 0)."""
    from local_dev.gpus import scan_gpus

    gpus = scan_gpus()
    if gpus:
        return {"device": "cuda", "gpu_name": gpus[0].name, "gpu_uuid": gpus[0].uuid,
                "gpu_index": gpus[0].index if gpu_index is None else gpu_index}
    try:  # no NVML bindings in the image: ask CUDA itself (this imports CUDA, which is fine here)
        import ctranslate2

        if ctranslate2.get_cuda_device_count() > 0:
            return {"device": "cuda", "gpu_name": "cuda", "gpu_index": gpu_index or 0}
    except Exception:  # noqa: BLE001
        pass
    return {"device": "cpu"}


def cmd_devices(args: argparse.Namespace) -> int:
    from local_dev.gpus import plan_workers, scan_gpus

    settings = _settings(args)
    gpus = scan_gpus()
    plan = plan_workers(settings, [] if settings.device == "cpu" else gpus, workers=args.workers)
    print(json.dumps({
        "gpus": [g.__dict__ for g in gpus],
        "workers": [{"worker": s.worker_id, "device": s.device.label, "stages": [x.value for x in s.stages],
                     "env": s.env} for s in plan],
    }, indent=2))
    return 0


def cmd_compose(args: argparse.Namespace) -> int:
    from local_dev.docker_launcher import render_compose

    sys.stdout.write(render_compose(args.gpus))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_dev", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the API on local worker processes or containers")
    serve.add_argument("--docker", action="store_true", help="one container per GPU instead of processes")
    serve.add_argument("--no-build", action="store_true", help="with --docker: use the image as it is")
    serve.add_argument("--workers", type=int, help="CPU workers (no GPU) or workers per GPU")
    serve.add_argument("--external-workers", type=int, metavar="N",
                       help="start none; wait for N workers to connect (docker compose)")
    serve.add_argument("--listen", default="127.0.0.1", help="address the worker listener binds")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--start-timeout", type=float, default=600.0)
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="run one worker that connects to a pool")
    worker.add_argument("--connect", required=True, metavar="HOST:PORT")
    worker.add_argument("--id", type=int, required=True)
    worker.add_argument("--role", choices=[r.value for r in Role], default=Role.ALL.value)
    worker.add_argument("--gpu-index", type=int, help="the host's index of this GPU (a label for metrics)")
    worker.add_argument("--connect-timeout", type=float, default=120.0)
    worker.set_defaults(func=cmd_worker)

    devices = sub.add_parser("devices", help="show the GPUs found and the worker plan")
    devices.add_argument("--workers", type=int)
    devices.set_defaults(func=cmd_devices)

    compose = sub.add_parser("compose", help="print the docker-compose file")
    compose.add_argument("--gpus", type=int, default=2)
    compose.set_defaults(func=cmd_compose)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
