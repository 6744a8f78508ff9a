"""The `mailha` command line.

One click group; each command is thin and calls a plain function that tests
can call directly. Every expected failure is a MailhaError: one line, a
non-zero exit code, no traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from mailha import __version__, terraform
from mailha import inventory as inventory_mod
from mailha import pair as pair_mod
from mailha import status as status_mod
from mailha.errors import BadInput

CONTRACT_OUTPUT = "mailha"
DEFAULT_INVENTORY = Path("inventories/lab/hosts.yml")

# Options shared by several commands, defined once (patronictl style).
inventory_option = click.option(
    "-i",
    "--inventory",
    "inventory_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_INVENTORY,
    envvar="MAILHA_INVENTORY",
    show_default=True,
    help="Generated inventory of the pair (env MAILHA_INVENTORY).",
)
output_option = click.option(
    "-o",
    "--output",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mailha")
def main() -> None:
    """Keep an email-marketing sending pair up: status, failover, failback, drills.

    Exit codes: 0 success, 1 the operation failed, 2 bad input (nothing changed).
    """


@main.command("inventory")
@click.option(
    "--terraform-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Terraform environment whose 'mailha' output to read.",
)
@click.option(
    "--from-json",
    "contract_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the output contract from a JSON file instead (as 'terraform output -json mailha' prints it).",
)
@click.option(
    "--output",
    "output_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Inventory file to write, e.g. inventories/lab/hosts.yml.",
)
def inventory_command(terraform_dir: Path | None, contract_file: Path | None, output_path: Path) -> None:
    """Write an Ansible inventory from an environment's output contract."""
    if (terraform_dir is None) == (contract_file is None):
        raise BadInput("give exactly one of --terraform-dir or --from-json")
    if contract_file is not None:
        contract = read_contract_file(contract_file)
    else:
        contract = terraform.output(terraform_dir, CONTRACT_OUTPUT)
    changed = inventory_mod.write(inventory_mod.build(contract), output_path)
    click.echo(f"inventory {output_path}: {'written' if changed else 'unchanged'}")


@main.command("status")
@inventory_option
@output_option
def status_command(inventory_path: Path, output_format: str) -> None:
    """Show the pair: roles, VRRP, floating IP, MTA health, queues, load balancer, DNS.

    Exit code: 0 healthy, 1 degraded, 2 critical (split brain, no active node,
    a standby in FAULT, an active node whose MTA does not answer).
    """
    topology = status_mod.gather(pair_mod.load(inventory_path))
    render = status_mod.render_json if output_format == "json" else status_mod.render_table
    click.echo(render(topology))
    raise SystemExit(topology.exit_code)


def read_contract_file(path: Path) -> object:
    try:
        text = path.read_text()
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path} is not JSON (line {exc.lineno}: {exc.msg})") from None


if __name__ == "__main__":  # pragma: no cover
    main()
