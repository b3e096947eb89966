"""`testbed` command: profile hardware, run plans on real processes, validate."""
from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Run scaled OPT models in real prefill and decode processes with real KV transfer."""


from .cli_profile import profile_cmd  # noqa: E402

main.add_command(profile_cmd)

from .cli_run import COMMANDS as _RUN_COMMANDS  # noqa: E402

for _cmd in _RUN_COMMANDS:
    main.add_command(_cmd)

from .cli_serve import serve_cmd  # noqa: E402

main.add_command(serve_cmd)

from .cli_replay import replay_cmd  # noqa: E402

main.add_command(replay_cmd)
