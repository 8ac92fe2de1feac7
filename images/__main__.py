"""`python -m images`: build the kit's container images, their local bases, and the upload tarball.

  base-images  debootstrap a Debian bookworm + Python 3.11 base -> add torch (CPU wheel, or CUDA) on top
  build        pick the engine and the bases -> build algorithm, evaluation and app -> print their sizes
  tarball      check the algorithm image's platform -> save | gzip it -> print size and sha256
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from images.bases import PYTHON_BASE, TORCH_BASES, image_exists, make_python_base, make_torch_base
from images.build import TARGETS, build_argv, build_options, choose_bases, image_size_and_platform, image_tag
from images.container_engine import ENGINES, detect_engine, engine_env
from images.pipconf import host_pip_settings
from images.tarball import save_image_tarball
from petct.errors import InputError
from petct.sizes import format_size


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m images", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=ENGINES, default=None,
                        help="container engine (default: docker when its daemon answers, else podman)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bases = commands.add_parser("base-images", help="make the local Debian python and torch bases")
    bases.add_argument("--torch", choices=tuple(TORCH_BASES), default="cpu", help="torch build (default: cpu)")
    bases.add_argument("--mirror", help="Debian mirror (default: the one the host's apt uses)")
    bases.add_argument("--rebuild", action="store_true", help="make them again even when they exist")
    build = commands.add_parser("build", help="build the kit's images")
    build.add_argument("--bases", choices=("auto", "local", "public"), default="auto",
                       help="auto: the local bases when `base-images` made them, else the public ones")
    build.add_argument("--cpu", action="store_true", help="CPU variant on the local CPU torch base (tags :cpu)")
    build.add_argument("--target", choices=TARGETS, action="append", help="only this one (repeatable)")
    tarball = commands.add_parser("tarball", help="the algorithm image as the .tar.gz grand-challenge takes")
    tarball.add_argument("--image", default=image_tag("algorithm", cpu=False), help="(default: %(default)s)")
    tarball.add_argument("--output", type=Path, default=Path("build/algorithm.tar.gz"),
                         help="(default: %(default)s)")
    tarball.add_argument("--compress-level", type=int, choices=range(1, 10), default=6, metavar="1-9",
                         help="gzip level: 1 is several times faster, 9 smallest (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        engine = detect_engine(args.engine)
        env = engine_env(engine)
        print(f"images: using {engine}", flush=True)
        if args.command == "base-images":
            return _base_images(engine, env, args)
        if args.command == "build":
            return _build(engine, env, args)
        size, digest = save_image_tarball(engine, args.image, args.output, env,
                                          compress_level=args.compress_level)
        print(f"{args.output}: {format_size(size)} ({size} bytes), sha256 {digest}")
        return 0
    except (InputError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _base_images(engine: str, env: dict[str, str], args: argparse.Namespace) -> int:
    settings = host_pip_settings()
    if args.rebuild or not image_exists(engine, PYTHON_BASE, env):
        make_python_base(engine, env, mirror=args.mirror)
    if args.rebuild or not image_exists(engine, TORCH_BASES[args.torch], env):
        make_torch_base(engine, env, flavour=args.torch, settings=settings,
                        build_options=build_options(engine, settings))
    print(f"bases: {PYTHON_BASE}, {TORCH_BASES[args.torch]}")
    return 0


def _build(engine: str, env: dict[str, str], args: argparse.Namespace) -> int:
    bases = choose_bases(engine, env, wanted=args.bases, cpu=args.cpu)
    print(f"images: building on {bases.label}", flush=True)
    options = build_options(engine, host_pip_settings())
    built = []
    for target in args.target or TARGETS:
        tag = image_tag(target, cpu=args.cpu)
        argv = build_argv(engine, target=target, tag=tag, bases=bases, options=options)
        print("+", " ".join(argv), flush=True)
        if subprocess.run(argv, env=env).returncode != 0:
            raise InputError(f"building {tag} failed (see the build output above)")
        built.append(tag)
    for tag in built:
        size, platform = image_size_and_platform(engine, tag, env)
        print(f"{tag}: {format_size(size)} {platform}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
