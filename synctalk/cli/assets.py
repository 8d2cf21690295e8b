"""`synctalk assets`: list, fetch and locate the downloadable model files."""

from __future__ import annotations

import argparse

from synctalk.cli.common import add_common_args


def register(subparsers) -> None:
    parser = subparsers.add_parser("assets", help="list or download model files into the cache",
                                   description="Model files live in $SYNCTALK_MODELS (default "
                                               "$SYNCTALK_HOME/models, ~/.cache/synctalk/models).")
    parser.add_argument("action", choices=("list", "fetch", "path"), help="list all; fetch NAME...; path NAME")
    parser.add_argument("names", nargs="*", metavar="NAME", help="asset names (fetch: default all)")
    add_common_args(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from synctalk import assets
    from synctalk.errors import UserInputError

    if args.overrides:
        raise UserInputError(f"assets takes no config overrides, got {' '.join(args.overrides)}")
    if args.action == "list":
        print(f"model cache: {assets.cache_dir()}")
        for asset in assets.REGISTRY.values():
            present = assets.is_available(asset.name)
            size = assets.path_of(asset.name).stat().st_size if present else asset.size_bytes
            origin = (f" [converted from {asset.source}, a {asset.size_bytes / 1e6:.1f} MB download]"
                      if asset.build else "")
            print(f"  {asset.name:<18} {'present' if present else 'missing':<8} {asset.filename:<24} "
                  f"{size / 1e6:6.1f} MB  {asset.licence:<12} {asset.description}{origin}")
        return 0
    names = args.names or (list(assets.REGISTRY) if args.action == "fetch" else [])
    if not names:
        raise UserInputError("name an asset, e.g. `synctalk assets path face_landmarker`")
    for name in names:
        if name not in assets.REGISTRY:
            raise UserInputError(f"unknown asset '{name}'; known: {', '.join(assets.REGISTRY)}")
        print(assets.fetch(name) if args.action == "fetch" else assets.path_of(name))
    return 0
