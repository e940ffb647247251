"""raybot serve | check-config | manifest | sandbox."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from importlib import resources

from bot.config import Config, ConfigError, load_config
from bot.cost import money_text
from bot.emr.sts import ENV_STS_ENDPOINT, probe_roles
from bot.logs import configure_logging, hold_secret
from bot.permissions import render_permission_table
from bot.settings import SettingsError, load_settings


def manifest_text() -> str:
    """The Slack app manifest shipped with raybot (the root manifest.yml is the same file)."""
    return resources.files("bot").joinpath("manifest.yml").read_text(encoding="utf-8")


def _serve(_: argparse.Namespace) -> int:
    from bot.server import StartupError, serve

    try:
        settings = load_settings()
        config = load_config(settings.config_path)
    except (SettingsError, ConfigError) as error:
        print(f"raybot: {error}", file=sys.stderr)
        return 2
    try:
        configure_logging(level=os.environ.get("RAYBOT_LOG_LEVEL", "INFO"))
    except ValueError as error:
        print(f"raybot: RAYBOT_LOG_FORMAT / RAYBOT_LOG_LEVEL: {error}", file=sys.stderr)
        return 2
    for secret in (settings.bot_token, settings.app_token, settings.signing_secret):
        hold_secret(secret)  # for the process's life: rotating credentials must never push these out
    try:
        asyncio.run(serve(settings, config))
    except StartupError as error:
        print(f"raybot: {error}", file=sys.stderr)
        return 1
    return 0


def _check_config(args: argparse.Namespace) -> int:
    path = args.path or os.environ.get("RAYBOT_CONFIG") or "raybot.yaml"
    try:
        config = load_config(path)
    except ConfigError as error:
        print(f"raybot: {error}", file=sys.stderr)
        return 1
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    counts = ", ".join(
        f"{n} {noun}{'' if n == 1 else 's'}"
        for n, noun in (
            (len(config.clusters), "cluster"),
            (len(config.roles), "role"),
            (len(config.channels), "channel"),
        )
    )
    warned = len(config.warnings)
    status = f"OK with {warned} warning{'' if warned == 1 else 's'} (above)" if warned else "OK"
    print(f"{path}: {status} ({counts})")
    from bot.store import StoreError, inspect_store

    database = os.environ.get("RAYBOT_DATABASE") or "raybot.db"
    try:
        status = asyncio.run(inspect_store(database))
        print(f"store: {status.describe()}")
    except StoreError as error:
        # Not fatal here: the config is what this command checks; `raybot serve` stops on a bad database.
        print(f"warning: store: {error}", file=sys.stderr)
    probed_ok = _probe_roles(config) if args.probe else True
    print()
    print(render_permission_table(config))
    print()
    print(render_price_table(config))
    return 0 if probed_ok else 1


def _probe_roles(config: Config) -> bool:
    """Assume each RAM role the config names once, with the default credentials chain; print what each said."""
    from bot.emr.credentials import DefaultCredentials
    from bot.server import role_credentials

    roles = role_credentials(config, DefaultCredentials(), os.environ.get(ENV_STS_ENDPOINT) or None)
    if roles is None:
        print("roles: none configured (every call uses raybot's own credentials)")
        return True

    async def run() -> dict[str, str]:
        try:
            return await probe_roles(config.ram_roles(), roles.check)
        finally:
            await roles.aclose()

    results = asyncio.run(run())
    print(probe_summary(roles.sts.endpoint, results))
    return all(result == "ok" for result in results.values())


def probe_summary(endpoint: str, results: dict[str, str]) -> str:
    """What `check-config --probe` says: how many roles STS let raybot assume, then each role's answer."""
    assumed = sum(result == "ok" for result in results.values())
    lines = [f"roles: probed through {endpoint}: {assumed} of {len(results)} assumed"]
    lines += [f"  {arn}: {result}" for arn, result in results.items()]
    return "\n".join(lines)


def render_price_table(config: Config) -> str:
    """The price each cluster uses, and where it comes from, as aligned plain text for `raybot check-config`."""
    if config.pricing is None:
        return "pricing: none configured; raybot shows compute units (CU) only, never an amount of money"
    header = ("CLUSTER", "REGION", "CU PRICE", "FROM", "GPU PRICES")
    rows = []
    for alias in config.clusters:
        price = config.price(alias)
        assert price is not None  # there is a pricing section
        cu = f"{money_text(price.cu_hour, price.currency)}/CU-h" if price.cu_hour is not None else "none: CU only"
        gpus = ", ".join(f"{spec} {money_text(amount, price.currency)}/h" for spec, amount in price.gpu_hour.items())
        rows.append((alias, config.cluster(alias).region, cu, price.source, gpus or "-"))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return f"pricing ({config.pricing.currency}):\n" + "\n".join(lines)


def _migrate(_: argparse.Namespace) -> int:
    """Bring RAYBOT_DATABASE's schema up to date and exit (raybot serve does it too, at start)."""
    from bot.store import Store, StoreError

    async def run() -> str:
        store = Store(os.environ.get("RAYBOT_DATABASE") or "raybot.db", heartbeat=False)
        await store.open()
        try:
            return (await store.schema_status()).describe()
        finally:
            await store.close()

    try:
        print(f"raybot: {asyncio.run(run())}")
    except StoreError as error:
        print(f"raybot: {error}", file=sys.stderr)
        return 1
    return 0


def _manifest(_: argparse.Namespace) -> int:
    sys.stdout.write(manifest_text())
    return 0


def _sandbox(args: argparse.Namespace) -> int:
    from bot.sandbox.run import main_sandbox

    return main_sandbox(args)


def _sandbox_arguments(parser: argparse.ArgumentParser) -> None:
    # The sandbox's own module knows its options; imported here only, so `raybot serve` does not load it.
    from bot.sandbox.run import add_sandbox_arguments

    add_sandbox_arguments(parser)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="raybot", description="Slack chat-ops for Ray clusters on EMR Serverless Spark"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the bot (Socket Mode with SLACK_APP_TOKEN, else HTTP)").set_defaults(run=_serve)
    check = sub.add_parser("check-config", help="validate the config and print the permission table")
    check.add_argument("path", nargs="?", help="config file (default: $RAYBOT_CONFIG or raybot.yaml)")
    check.add_argument(
        "--probe", action="store_true", help="also assume each configured RAM role once (exit 1 if one fails)"
    )
    check.set_defaults(run=_check_config)
    sub.add_parser("manifest", help="print the Slack app manifest").set_defaults(run=_manifest)
    sub.add_parser(
        "migrate", help="bring RAYBOT_DATABASE's schema up to date and exit (a separate migration role's job)"
    ).set_defaults(run=_migrate)
    sandbox = sub.add_parser(
        "sandbox", help="try raybot in a browser: emulated Slack and cloud, on 127.0.0.1 only, no account needed"
    )
    _sandbox_arguments(sandbox)
    sandbox.set_defaults(run=_sandbox)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
